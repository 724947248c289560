"""The score cache: a night scores only what is new, and its outputs equal a full rescore."""

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from s3server import ACCESS_KEY, SECRET_KEY

from localnat.curate.cache.keys import KEY
from localnat.curate.cache.score_cache import ScoreCache
from localnat.curate.job import run_job
from localnat.curate.run.identity import StudentIdentity
from localnat.curate.storage import list_files
from localnat.scoring.windows import Window
from localnat.testing.jobs import assert_same_outputs, config, corpus, outputs, shards


@pytest.fixture(scope="module")
def nights(ray_local, tiny_student, tmp_path_factory):
    """Night 1 over 49 rows with a cache; night 2 over those plus one new row (2%) with the
    cache; and a cache-less full run of night 2's corpus to compare with."""
    tmp = tmp_path_factory.mktemp("nights")
    df = corpus()
    old, new = df.iloc[:-1], df.iloc[-1:]
    inputs = shards(tmp / "in", old, 10)
    cache = str(tmp / "cache")
    out = str(tmp / "out")
    first = run_job(config(tiny_student, [str(inputs)], out, run_id="n1", cache=cache))
    (ns,) = Path(cache).iterdir()  # the namespace of these settings
    pq.write_table(pa.Table.from_pandas(new, preserve_index=False), inputs / "zz-new.parquet")
    second = run_job(config(tiny_student, [str(inputs)], out, run_id="n2", cache=cache))
    full = run_job(config(tiny_student, [str(inputs)], out, run_id="full"))
    return {
        "tmp": tmp,
        "inputs": inputs,
        "cache": cache,
        "namespace": ns.name,
        "out": Path(out),
        "old": old,
        "new": new,
        "runs": {"n1": first, "n2": second, "full": full},
        "student": tiny_student,
    }


def test_a_night_scores_only_new_rows_and_equals_a_full_rescore(nights):
    first, second = nights["runs"]["n1"], nights["runs"]["n2"]
    old, new = len(nights["old"]), len(nights["new"])
    assert first["counts"]["cache_hits"] == 0 and first["counts"]["cache_misses"] == old
    c = second["counts"]
    assert c["input_rows"] == old + new == c["scored"] + c["rejected"]
    assert c["cache_misses"] == new and c["cache_hits"] == old
    # the student saw only the new row: the tokens it scored are that row's
    scores = outputs(nights["out"] / "full")["scores"]
    new_tokens = scores[
        scores["prompt_id"].isin(nights["new"]["prompt_id"])
        & scores["teacher"].isin(nights["new"]["teacher"])
    ]
    assert second["throughput"]["response_tokens_this_run"] == new_tokens["n_response_tokens"].sum()
    assert "score cache: 1 rows scored by the student, 49 reused" in second["report"]
    assert_same_outputs(nights["out"] / "n2", nights["out"] / "full")


def test_the_cache_is_append_only_and_holds_each_scored_row_once(nights):
    parts = [u for u in list_files(nights["cache"]) if u.endswith(".parquet")]
    keys = pa.concat_tables([pq.read_table(p) for p in parts]).column(KEY).to_pylist()
    assert len(keys) == len(set(keys)) == len(nights["old"]) + len(nights["new"])
    (settings,) = [u for u in list_files(nights["cache"]) if u.endswith("settings.json")]
    about = json.loads(Path(settings).read_text())
    assert about["identity"]["files"] and about["prompt_probe"]["rendered"]


def test_a_dry_run_says_how_many_rows_would_be_scored(nights, tmp_path):
    extra = corpus().iloc[:3].assign(response=lambda d: d["response"] + " Done.")
    pq.write_table(pa.Table.from_pandas(extra, preserve_index=False), tmp_path / "more.parquet")
    inputs = [str(nights["inputs"]), str(tmp_path / "more.parquet")]
    out = run_job(
        config(nights["student"], inputs, str(tmp_path / "o"), cache=nights["cache"], dry_run=True)
    )
    assert out["input_rows"] == 53 and out["cache_hits"] == 50 and out["rows_to_score"] == 3
    assert not (tmp_path / "o").exists()


def test_changed_settings_or_student_never_reuse_a_score(nights, tmp_path):
    # each setting that changes a score is another namespace; speed settings are not
    def namespace(cfg, student):
        return ScoreCache.of(cfg, student).namespace()

    base = config(nights["student"], [], "o", cache="c")
    a, b = StudentIdentity("s", {"w": "a"}), StudentIdentity("s", {"w": "b"})
    ns = namespace(base, a)
    for changed in (
        replace(base.score, windows=(Window(k=2),)),
        replace(base.score, segmenter="line"),
        replace(base.score, system_prompt="Be brief."),
        replace(base.score, dtype="bfloat16"),
        replace(base.score, max_window_tokens=512),
        replace(base.score, attn_implementation="eager"),
    ):
        assert namespace(replace(base, score=changed), a) != ns
    assert namespace(base, b) != ns  # another student
    probe = StudentIdentity("s", {"w": "a"}, prompt_probe={"rendered": "<|system|>..."})
    assert namespace(base, probe) != ns  # another prompt encoding
    for same in (
        replace(base.score, batch_tokens=512, head_chunk=64),
        replace(base.score, student="/elsewhere/same-weights"),
    ):
        assert namespace(replace(base, score=same), a) == ns
    # a real run with another window on the same cache: nothing reused, all rows scored
    run = run_job(
        config(
            nights["student"],
            [str(nights["inputs"])],
            str(tmp_path / "out"),
            run_id="w2",
            cache=nights["cache"],
            window=2,
        )
    )
    assert run["counts"]["cache_hits"] == 0 and run["counts"]["cache_misses"] == 50


def test_a_corrupt_cache_part_is_reported_and_its_rows_rescored(nights, tmp_path, capsys):
    cache = tmp_path / "cache"
    import shutil

    shutil.copytree(nights["cache"], cache)
    parts = sorted((cache / nights["namespace"]).rglob("*.parquet"))
    lost = pq.read_metadata(parts[0]).num_rows
    parts[0].write_bytes(b"PAR1 not a parquet file at all")
    run = run_job(
        config(
            nights["student"],
            [str(nights["inputs"])],
            str(tmp_path / "out"),
            run_id="c",
            cache=str(cache),
        )
    )
    printed = capsys.readouterr().out
    assert printed.count("is unreadable, its rows will be rescored") == 1
    assert run["counts"]["cache_misses"] == lost and run["counts"]["cache_hits"] == 50 - lost
    assert_same_outputs(tmp_path / "out" / "c", nights["out"] / "full")


def test_a_cache_part_of_other_types_is_named_once_and_its_rows_rescored(nights, tmp_path, capsys):
    import shutil

    import pyarrow.compute as pc

    cache = tmp_path / "cache"
    shutil.copytree(nights["cache"], cache)
    part = sorted((cache / nights["namespace"]).rglob("*.parquet"))[0]
    table = pq.read_table(part)
    i = table.schema.get_field_index("local_nat")
    table = table.set_column(i, "local_nat", pc.cast(table.column("local_nat"), pa.string()))
    pq.write_table(table, part)
    run = run_job(
        config(
            nights["student"],
            [str(nights["inputs"])],
            str(tmp_path / "out"),
            run_id="t",
            cache=str(cache),
        )
    )
    printed = capsys.readouterr().out
    named = [line for line in printed.splitlines() if part.name in line]
    assert sum("its rows will be rescored" in line for line in named) == 1  # once, not per actor
    assert "local_nat is string (expected double)" in printed
    # the night's end compaction sets it aside: kept for a person, out of every reader's way
    assert any("set aside" in line for line in named) and not part.exists()
    assert len(list((cache / nights["namespace"] / "aside").iterdir())) == 1
    assert run["counts"]["cache_misses"] == table.num_rows
    assert run["counts"]["cache_hits"] == 50 - table.num_rows
    assert_same_outputs(tmp_path / "out" / "t", nights["out"] / "full")


def test_runs_sharing_an_s3_cache_at_once_agree_and_keep_no_secret(
    ray_local, s3env, tiny_student, tmp_path
):
    s3env.bucket("cache")
    inputs = shards(tmp_path / "in", corpus().iloc[:20], 5)
    cache = "s3://cache/nightly"
    runs, errors = {}, []

    def night(run_id):
        try:
            runs[run_id] = run_job(
                config(
                    tiny_student, [str(inputs)], str(tmp_path / "out"), run_id=run_id, cache=cache
                )
            )
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=night, args=(r,)) for r in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and set(runs) == {"x", "y"}
    assert_same_outputs(tmp_path / "out" / "x", tmp_path / "out" / "y")
    # both wrote their scores; where they overlap, the values agree bit for bit
    client = s3env.client()
    objects = [o["Key"] for o in client.list_objects_v2(Bucket="cache")["Contents"]]
    tables = [
        pq.read_table(pa.BufferReader(client.get_object(Bucket="cache", Key=k)["Body"].read()))
        for k in objects
        if k.endswith(".parquet")
    ]
    values = pa.concat_tables(tables).to_pandas()
    values["step_logprobs"] = values["step_logprobs"].map(tuple)
    per_key = values.drop_duplicates(subset=[KEY, "local_nat", "global_nat", "step_logprobs"])
    assert per_key[KEY].is_unique and per_key[KEY].nunique() == 20
    for key in objects:  # no credential in any object the cache holds
        body = client.get_object(Bucket="cache", Key=key)["Body"].read()
        assert SECRET_KEY.encode() not in body and ACCESS_KEY.encode() not in body
    # a third night reuses every row from S3
    again = run_job(
        config(tiny_student, [str(inputs)], str(tmp_path / "out"), run_id="z", cache=cache)
    )
    assert again["counts"]["cache_hits"] == 20 and again["counts"]["cache_misses"] == 0
    assert_same_outputs(tmp_path / "out" / "z", tmp_path / "out" / "x")


def test_a_night_over_the_bound_ends_with_a_compaction(nights, tmp_path, monkeypatch):
    import shutil

    from localnat.curate.cache import namespace as cache_module

    cache = tmp_path / "cache"
    shutil.copytree(nights["cache"], cache)
    parts = len(list((cache / nights["namespace"] / "parts").iterdir()))
    monkeypatch.setattr(cache_module, "PART_BOUND", 2)  # a small bound, as a year's would be
    out = tmp_path / "out"
    run = run_job(
        config(nights["student"], [str(nights["inputs"])], str(out), run_id="a", cache=str(cache))
    )
    (folded,) = run["cache_compaction"]
    assert folded["generation"] == 1 and folded["parts_before"] == parts
    assert folded["objects_after"] <= 6  # settings, a commit, an index, a data file
    assert run["counts"]["cache_hits"] == 50
    again = run_job(
        config(nights["student"], [str(nights["inputs"])], str(out), run_id="b", cache=str(cache))
    )
    assert again["counts"]["cache_hits"] == 50 and again["counts"]["cache_misses"] == 0
    assert_same_outputs(out / "b", nights["out"] / "full")


def test_compaction_racing_a_reading_night_keeps_every_key_once(nights, tmp_path):
    """A night reads while another process compacts the same namespace over and over: its
    view (a generation and parts) stays readable to its end, every key once."""
    import shutil

    from localnat.curate.cache.writer import compact

    cache = tmp_path / "cache"
    shutil.copytree(nights["cache"], cache)
    ns = str(cache / nights["namespace"])
    result, errors = {}, []

    def night():
        try:
            cfg = config(
                nights["student"],
                [str(nights["inputs"])],
                str(tmp_path / "out"),
                run_id="r",
                cache=str(cache),
            )
            result["run"] = run_job(cfg)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    thread = threading.Thread(target=night)
    thread.start()
    folds = []
    while thread.is_alive():
        folds.append(compact(ns, bound=0, force=True))
        time.sleep(0.2)
    thread.join()
    assert not errors, errors
    c = result["run"]["counts"]
    assert c["cache_hits"] == 50 and c["cache_misses"] == 0  # nothing it read was deleted
    assert any("generation" in f for f in folds)
    assert_same_outputs(tmp_path / "out" / "r", nights["out"] / "full")
    final = compact(ns, bound=0, force=True)  # no reader now: collected
    assert not list((cache / nights["namespace"] / "parts").iterdir())
    assert final["objects_after"] <= 6
