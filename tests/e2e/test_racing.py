"""Racing selection in the job (docs/method.md §5.2): under step sampling, round by round
(each a Ray pass over the undecided rows' newly sampled steps), each prompt's choice is
within epsilon of its best candidate's exact LN; killed or rerun, it resumes."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from localnat.curate.job import run_job
from localnat.curate.storage import read_parquet_dir
from localnat.options import parse_config
from localnat.testing.jobs import SAMPLE

EPSILON = 0.05  # some prompts are settled early, some race on
# chunks of 8 rows: a round commits several, so a kill between them can be resumed
RACED = dict(sample_steps=0.2, race_epsilon=EPSILON, commit_rows=8)


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


def test_racing_picks_within_epsilon_of_the_best(runs):
    tmp, exact, raced = runs
    ex, sa = scores(tmp, "exact"), scores(tmp, "raced")
    assert (sa["local_nat_se"] > 0).sum() > len(sa) // 2  # most rows really sampled
    selected = read_parquet_dir(str(tmp / "out" / "raced" / "selected")).to_pandas()
    correct = ex[ex["is_correct"]]
    best = correct.groupby("prompt_id")["local_nat"].max()
    for row in selected.itertuples():
        assert ex.loc[row.row_id, "local_nat"] >= best[row.prompt_id] - EPSILON - 1e-6
        # n_candidates counts the prompt's correct candidates
        assert row.n_candidates == (sa["is_correct"] & (sa["prompt_id"] == row.prompt_id)).sum()
    c = raced["counts"]
    rounds = c["race_rounds"]
    assert rounds >= 1 and len(c["race_rows_per_round"]) == rounds and c["race_failed"] == 0
    assert c["race_rescored"] == sum(c["race_rows_per_round"]) > 0
    by = selected["settled_by"].value_counts().to_dict()
    assert sum(by.values()) == len(selected) and len(by) > 1  # settled at several rounds
    assert set(by) <= {"sample", *(f"round {t}" for t in range(1, rounds + 1))}
    assert sum(c["prompts_settled_per_round"].values()) == len(selected)
    assert f"racing: {rounds} rounds over {c['race_rows_per_round']} rows" in raced["report"]
    # each round scored only its rows' new steps: never a whole row again
    for t in range(1, rounds + 1):
        got = read_parquet_dir(str(tmp / "out" / "raced" / "race" / f"r{t:02d}" / "scores"))
        got = got.to_pandas()
        assert len(got) == c["race_rows_per_round"][t - 1]
        new = got["round_steps"].map(len)
        assert (new < ex.loc[got["row_id"], "n_steps"].to_numpy()).all() and (new > 0).all()
    assert c["model_tokens"] > c["race_model_tokens"] > 0


def test_exact_runs_do_not_race(runs):
    tmp, exact, _ = runs
    selected = read_parquet_dir(str(tmp / "out" / "exact" / "selected")).to_pandas()
    assert selected["settled_by"].isna().all()
    assert "race_rounds" not in exact["counts"] and not (tmp / "out" / "exact" / "race").exists()


def test_a_night_with_the_cache_reuses_every_round(runs, tiny_student):
    """The score cache holds each round's results too (a namespace a round): a second
    night over the same rows scores nothing, and chooses the same responses."""
    tmp, _, raced = runs
    again = run_job(config(tiny_student, tmp, "night2", cache=tmp / "cache", **RACED))
    c = again["counts"]
    assert c["cache_hits"] == raced["counts"]["scored"] and c["cache_misses"] == 0
    assert c["race_rows_per_round"] == raced["counts"]["race_rows_per_round"]
    assert c["race_response_tokens"] == 0 and c["model_tokens"] == 0  # all from the cache
    namespaces = [p.name for p in (tmp / "cache").iterdir()]
    assert len(namespaces) == 1 + raced["counts"]["race_rounds"]
    first, second = (
        read_parquet_dir(str(tmp / "out" / run / "selected")).to_pandas().sort_values("row_id")
        for run in ("raced", "night2")
    )
    pd.testing.assert_frame_equal(
        first.reset_index(drop=True), second.reset_index(drop=True), check_exact=True
    )


def test_racing_resumes_in_a_round_and_restarts_on_another_epsilon(runs, tiny_student):
    """A run killed in a round redoes only that round's chunks not committed, and picks the
    same; a rerun with another --race-epsilon starts race/ again (it is the run's own)."""
    tmp, _, raced = runs
    run_dir = tmp / "out" / "raced"
    before = read_parquet_dir(str(run_dir / "selected")).to_pandas().sort_values("prompt_id")
    last = raced["counts"]["race_rounds"]
    markers = sorted((run_dir / "race" / f"r{last:02d}" / "_done").glob("*.json"))
    (run_dir / "manifest.json").unlink()  # as if killed after the last round's first chunk
    for marker in markers[1:]:
        marker.unlink()
    again = run_job(config(tiny_student, tmp, "raced", **RACED))  # no cache: the run's own
    after = read_parquet_dir(str(run_dir / "selected")).to_pandas().sort_values("prompt_id")
    pd.testing.assert_frame_equal(
        before.reset_index(drop=True), after.reset_index(drop=True), check_exact=True
    )
    assert again["counts"]["race_rows_per_round"] == raced["counts"]["race_rows_per_round"]
    # this attempt scored only the lost chunks; the run's count is each chunk's, once
    assert again["counts"]["race_response_tokens"] < raced["counts"]["race_response_tokens"]
    assert again["counts"]["race_model_tokens"] == raced["counts"]["race_model_tokens"]
    first = json.loads(markers[0].read_text())
    assert all((run_dir / "race" / f"r{last:02d}" / p).exists() for p in first["parts"])

    (run_dir / "manifest.json").unlink()  # resumed with a wide epsilon: the rounds start again
    wide = run_job(config(tiny_student, tmp, "raced", **dict(RACED, race_epsilon=1000.0)))
    assert wide["counts"]["race_rounds"] == 0  # every prompt settled by the sample
    chosen = read_parquet_dir(str(run_dir / "selected")).to_pandas()
    assert set(chosen["settled_by"]) == {"sample"}
