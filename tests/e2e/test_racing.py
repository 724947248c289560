"""Racing selection in the job (docs/method.md §5.2): under step sampling, each prompt's
choice is made on exact LN wherever the sample cannot make it alone, by a second Ray pass
that scores only the survivors' unsampled steps; killed or rerun, it resumes."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from localnat.curate.job import run_job
from localnat.curate.selection import race
from localnat.curate.storage import list_files, read_parquet_dir
from localnat.options import parse_config
from localnat.testing.jobs import SAMPLE

Z = 1.0  # narrow enough that some prompts are settled by the sample, some by the exact pass
# chunks of 8 rows: the exact pass commits several, so a kill between them can be resumed
RACED = dict(sample_steps=0.2, race_z=Z, commit_rows=8)


def corpus() -> pd.DataFrame:
    """84 rows: the bundled MATH traces of seven teachers, each cut into three 1,000-character
    pieces that act as three prompts (a piece holds about ten sentence steps)."""
    df = pq.read_table(SAMPLE).to_pandas()
    pieces = []
    for v in range(3):
        part = df.copy()
        part["prompt_id"] = part["prompt_id"] + f"-{v}"
        part["prompt"] = part["prompt"] + f" (part {v})"
        part["response"] = part["response"].str.slice(v * 1000, (v + 1) * 1000)
        pieces.append(part)
    return pd.concat(pieces, ignore_index=True)


def config(student, tmp, run_id, **kw):
    args = ["--student", student, "--output", str(tmp / "out"), "--run-id", run_id]
    args += ["--input", str(tmp / "in"), "--correct-column", "is_correct", "--window", "1"]
    args += ["--call-tokens", "4000"]
    for key, value in kw.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return parse_config(args)


@pytest.fixture(scope="module")
def runs(ray_local, tiny_student, tmp_path_factory):
    """The same rows scored exactly, and sampled at F = 0.2 with racing."""
    tmp = tmp_path_factory.mktemp("racing")
    (tmp / "in").mkdir()
    corpus().to_parquet(tmp / "in" / "corpus.parquet")
    exact = run_job(config(tiny_student, tmp, "exact"))
    raced = run_job(config(tiny_student, tmp, "raced", cache=tmp / "cache", **RACED))
    return tmp, exact, raced


def scores(tmp, run_id) -> pd.DataFrame:
    return read_parquet_dir(str(tmp / "out" / run_id / "scores")).to_pandas().set_index("row_id")


def test_racing_chooses_on_exact_scores(runs):
    tmp, exact, raced = runs
    ex, sa = scores(tmp, "exact"), scores(tmp, "raced")
    assert (sa["local_nat_se"] > 0).sum() > len(sa) // 2  # most rows really sampled
    survivors = race(sa.reset_index(), Z, correct_only=True).set_index("row_id")
    selected = read_parquet_dir(str(tmp / "out" / "raced" / "selected")).to_pandas()
    assert set(selected["settled_by"]) == {"sample", "exact"}  # both paths ran
    for row in selected.itertuples():
        rivals = survivors.index[survivors["prompt_id"] == row.prompt_id]
        assert row.row_id in rivals
        if row.settled_by == "exact":  # no survivor is better on exact LN
            assert ex.loc[row.row_id, "local_nat"] >= ex.loc[rivals, "local_nat"].max() - 1e-6
            # and selected/ carries the exact LN it was chosen on
            assert row.local_nat == pytest.approx(ex.loc[row.row_id, "local_nat"], abs=1e-6)
        else:  # one survivor, or none needed the exact pass
            assert len(rivals) == 1 or (survivors.loc[rivals, "local_nat_se"] == 0).all()
        # n_candidates counts the prompt's correct candidates, not the survivors
        assert row.n_candidates == (sa["is_correct"] & (sa["prompt_id"] == row.prompt_id)).sum()

    c = raced["counts"]
    by = selected["settled_by"].value_counts()
    assert (
        f"racing: {c['race_rescored']} of {c['race_survivors']} survivors' unsampled steps "
        f"scored; prompts settled by the sample {by['sample']}, by the exact pass {by['exact']}"
    ) in raced["report"]
    assert c["prompts_settled_by_sample"] == by["sample"]
    assert c["prompts_settled_by_exact"] == by["exact"]
    assert c["race_survivors"] == len(survivors) and c["race_failed"] == 0
    assert c["race_rescored"] == int(survivors["rescore"].sum()) > 0
    # the exact pass scored only the survivors' unsampled steps: fewer tokens than rescoring
    # those rows whole (and its rows are the survivors, nothing else)
    rest = read_parquet_dir(str(tmp / "out" / "raced" / "race" / "scores")).to_pandas()
    assert sorted(rest["row_id"]) == sorted(survivors.index[survivors["rescore"]])
    whole = ex.loc[rest["row_id"], "n_steps"]
    assert (rest["rest_steps"].to_numpy() < whole.to_numpy()).all()
    assert c["race_response_tokens"] == ex.loc[rest["row_id"], "n_response_tokens"].sum()


def test_exact_runs_do_not_race(runs):
    tmp, exact, _ = runs
    selected = read_parquet_dir(str(tmp / "out" / "exact" / "selected")).to_pandas()
    assert selected["settled_by"].isna().all()
    assert "race_survivors" not in exact["counts"] and not (tmp / "out" / "exact" / "race").exists()


def test_a_night_with_the_cache_reuses_the_exact_pass(runs, tiny_student):
    """The score cache holds the exact pass's results too (a namespace of their own): a
    second night over the same rows scores nothing, and chooses the same responses."""
    tmp, _, raced = runs
    again = run_job(config(tiny_student, tmp, "night2", cache=tmp / "cache", **RACED))
    c = again["counts"]
    assert c["cache_hits"] == raced["counts"]["scored"] and c["cache_misses"] == 0
    assert c["race_rescored"] == raced["counts"]["race_rescored"] > 0
    assert c["race_response_tokens"] == 0  # every survivor's unsampled steps: from the cache
    namespaces = [p.name for p in (tmp / "cache").iterdir()]
    assert len(namespaces) == 2  # the sampled scores, and the exact pass's
    first, second = (
        read_parquet_dir(str(tmp / "out" / run / "selected")).to_pandas().sort_values("row_id")
        for run in ("raced", "night2")
    )
    pd.testing.assert_frame_equal(
        first.reset_index(drop=True), second.reset_index(drop=True), check_exact=True
    )


def test_racing_resumes_and_restarts_on_another_z(runs, tiny_student):
    """A run killed in its exact pass redoes only the chunks not committed; a rerun with
    another --race-z starts race/ again (it is the run's own)."""
    tmp, _, raced = runs
    run_dir = tmp / "out" / "raced"
    before = read_parquet_dir(str(run_dir / "selected")).to_pandas().sort_values("prompt_id")
    markers = sorted((run_dir / "race" / "_done").glob("*.json"))
    assert len(markers) >= 2
    (run_dir / "manifest.json").unlink()  # as if killed after the first exact-pass chunk
    for marker in markers[1:]:
        marker.unlink()
    cfg = dict(RACED, cache=tmp / "cache")
    again = run_job(config(tiny_student, tmp, "raced", **cfg))
    after = read_parquet_dir(str(run_dir / "selected")).to_pandas().sort_values("prompt_id")
    pd.testing.assert_frame_equal(
        before.reset_index(drop=True), after.reset_index(drop=True), check_exact=True
    )
    redone = sum(pq.read_metadata(p).num_rows for p in list_files(str(run_dir / "race" / "scores")))
    assert redone == again["counts"]["race_rescored"]  # no row twice, none lost
    first = json.loads(markers[0].read_text())
    assert again["counts"]["race_response_tokens"] < raced["counts"]["race_response_tokens"]
    assert first["parts"]  # the kept chunk's parts are still listed and present
    assert all((run_dir / "race" / p).exists() for p in first["parts"])

    # resumed with another z: race/ starts again, over that z's survivors only
    (run_dir / "manifest.json").unlink()
    cfg["race_z"] = 3.0
    wide = run_job(config(tiny_student, tmp, "raced", **cfg))
    rest = read_parquet_dir(str(run_dir / "race" / "scores")).to_pandas()
    survivors = race(scores(tmp, "raced").reset_index(), 3.0, correct_only=True)
    assert sorted(rest["row_id"]) == sorted(survivors.loc[survivors["rescore"], "row_id"])
    assert wide["counts"]["race_rescored"] == len(rest) > again["counts"]["race_rescored"]
