"""Real corpora: long tails of lengths, odd names, types and values. A run completes, conserves
every row, and bounds the work of one call by tokens."""

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from localnat import ScoreConfig, Scorer
from localnat.curate.job import run_job
from localnat.curate.run.student_checks import GpusUnavailable
from localnat.curate.storage import list_files, read_parquet_dir, read_text
from localnat.testing.jobs import SAMPLE, config, sample

LONG_TEACHERS = ("QwQ-32B", "s1.1-32B", "LIMO-32B")


def jsonl(rows) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


def test_odd_names_types_and_values_never_stop_a_run(ray_local, s3, tiny_student, monkeypatch):
    client = s3.client()
    client.create_bucket(Bucket="traps")
    put = lambda key, body: client.put_object(Bucket="traps", Key=key, Body=body)  # noqa: E731
    df = sample(300)
    rows = df[["prompt_id", "prompt", "teacher", "response", "is_correct"]].to_dict("records")
    a = [dict(r, source_dataset=1) for r in rows[:6]]
    a[1]["prompt_id"] = "bad\udc80id"  # a lone surrogate: that row is rejected, not the file
    a[2]["is_correct"] = "maybe"  # not true/false/yes/no/1/0: rejected with the value named
    a[3]["teacher"] = "odd $\\foo{$ | teacher"  # mathtext and a pipe in reports
    put("corpus/odd name #1.jsonl", b"\xef\xbb\xbf" + jsonl(a))  # '#' and a BOM
    b = [dict(r, source_dataset="gsm8k", prompt_id=i) for i, r in enumerate(rows[6:10])]
    del b[0]["is_correct"]  # a JSONL writer that leaves out a null field
    put("corpus/b.jsonl", jsonl(b))  # prompt ids as ints here, strings elsewhere
    put("corpus/empty.jsonl", b"")
    put("corpus/blank.jsonl", b"\n  \n\n")
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows[10:14]), sink)
    put("corpus/c.parquet", sink.getvalue().to_pybytes())

    cfg = config(tiny_student, ["s3://traps/corpus/"], "s3://traps/out", run_id="t")

    def broken_png(board, student):
        raise RuntimeError("no renderer")

    monkeypatch.setattr("localnat.curate.report.manifest.png", broken_png)  # a report that fails
    planned = run_job(config(tiny_student, ["s3://traps/corpus/"], "s3://traps/o", dry_run=True))
    manifest = run_job(cfg)
    c = manifest["counts"]
    assert c["input_rows"] == c["scored"] + c["rejected"] == 14 + 2 == planned["input_rows"]
    rejects = read_parquet_dir("s3://traps/out/t/rejects").to_pandas()
    reasons = " | ".join(rejects["reject_reason"])
    assert len(rejects) == 4, reasons
    assert "prompt_id is not valid UTF-8" in reasons
    assert "'is_correct' is 'maybe': use true/false, yes/no or 1/0" in reasons
    assert reasons.count("file has no rows") == 2
    assert any(
        "odd name #1.jsonl#" in s
        for s in read_parquet_dir("s3://traps/out/t/scores").column("source").to_pylist()
    )
    selected = read_parquet_dir("s3://traps/out/t/selected").to_pandas()
    assert "source_dataset" in manifest["selected_text_columns"]
    assert set(selected["source_dataset"].dropna()) <= {"1", "gsm8k"}
    # the failing report is a warning in the manifest; everything else is written
    assert manifest["report_errors"] == ["teachers.png: RuntimeError: no renderer"]
    assert "odd $\\foo{$ \\| teacher" in read_text("s3://traps/out/t/teachers.md")


def test_gpus_asked_of_a_cluster_without_gpus_fail_fast(ray_local, tiny_student, tmp_path):
    pq.write_table(pa.Table.from_pandas(sample(200).head(2)), tmp_path / "a.parquet")
    cfg = config(
        tiny_student,
        [str(tmp_path / "a.parquet")],
        str(tmp_path / "o"),
        gpus_per_actor=1,
        device="cpu",
    )
    with pytest.raises(GpusUnavailable, match="the Ray cluster has 0 GPUs"):
        run_job(cfg)


@pytest.fixture(scope="module")
def long_tail(ray_local, tiny_student, tmp_path_factory):
    """Five files of short rows and one holding a single long real trace (long-CoT answers
    of the sample, joined), scored by two actors with a small call budget and a Ray
    no-progress timeout: the run a long tail used to kill."""
    d = tmp_path_factory.mktemp("longtail")
    df = sample(400)
    for i in range(5):
        part = df.iloc[i * 4 : i * 4 + 4]
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), d / f"short{i}.parquet")
    full = pq.read_table(SAMPLE)
    full = full.to_pandas()
    text = "\n\n".join(full[full.teacher.isin(LONG_TEACHERS)].response)[:120_000]
    long = pd.DataFrame([{**df.iloc[0].to_dict(), "teacher": "long-teacher", "response": text}])
    pq.write_table(pa.Table.from_pandas(long, preserve_index=False), d / "along.parquet")
    cfg = config(
        tiny_student,
        [str(d)],
        str(tmp_path_factory.mktemp("out")),
        run_id="lt",
        actors=2,
        call_tokens=6000,
        no_progress_timeout=120,
    )
    return cfg, run_job(cfg), df, long


def test_a_long_row_is_scored_exactly_and_holds_no_short_row_back(long_tail, tiny_student):
    cfg, manifest, df, long = long_tail
    c = manifest["counts"]
    assert c["input_rows"] == c["scored"] == len(df.head(20)) + 1
    run_dir = manifest["run_dir"]
    scores = pq.read_table(f"{run_dir}/scores").to_pandas().set_index("teacher")
    got = scores.loc["long-teacher"]
    alone = Scorer(ScoreConfig(student=tiny_student, windows=(4, 0.25), device="cpu"))
    expect = alone.score(long.prompt.tolist(), long.response.tolist()).to_pylist()[0]
    assert got.n_response_tokens == expect["n_response_tokens"] > 25_000
    assert abs(got.local_nat - expect["local_nat"]) < 1e-5
    assert abs(got.global_nat - expect["global_nat"]) < 1e-5
    # the short files committed while the long row was still being scored
    markers = {Path(u).name: json.loads(read_text(u)) for u in list_files(f"{run_dir}/_done")}
    long_file = 0  # along.parquet sorts first: read first, scored while the rest flows
    long_at = max(m["committed_unix"] for n, m in markers.items() if int(n[1:7]) == long_file)
    short_at = [m["committed_unix"] for n, m in markers.items() if int(n[1:7]) != long_file]
    assert max(short_at) < long_at
    assert manifest["most_expensive_rows"][0]["teacher"] == "long-teacher"


def test_work_per_call_is_bounded_by_tokens_and_actors_share_it(long_tail):
    cfg, manifest, _, _ = long_tail
    calls = manifest["calls"]
    assert calls["budget_tokens"] == 6000
    assert calls["over_budget_multi_rows"] == 0  # over the budget only ever alone
    assert calls["over_budget_single_rows"] >= 1  # the long row
    assert calls["max_rows"] > 1  # short rows still share calls
    rows = manifest["counts"]["input_rows"]
    assert sum(calls["rows_per_actor"].values()) == rows  # every row in exactly one call
    # a chunk's parts are merged when it commits: one scores/ part a chunk, no stray part
    run_dir = manifest["run_dir"]
    markers = [json.loads(read_text(u)) for u in list_files(f"{run_dir}/_done")]
    listed = {p for m in markers for p in m["parts"] if p.startswith("scores/")}
    assert all(sum(p.startswith("scores/") for p in m["parts"]) <= 1 for m in markers)
    on_disk = [u.split(f"{run_dir}/", 1)[1] for u in list_files(f"{run_dir}/scores")]
    assert sorted(on_disk) == sorted(listed)
    # the long call keeps one actor busy; with one call in flight per actor the short
    # files' calls go to the other
    per_actor = calls["rows_per_actor"]
    assert len(per_actor) == 2 and min(per_actor.values()) > 0, per_actor
