"""Teacher ranking that stops, in the job (docs/method.md §7.2): blocks of prompts scored as
the scores pass scores them, the stop once the top teacher stands apart, the same top
teacher as the run over every prompt; killed, it resumes; asked for more prompts, it
continues."""

import json

import numpy as np
import pandas as pd
import pytest

from localnat.curate.job import run_job
from localnat.curate.storage import read_parquet_dir
from localnat.testing.jobs import config

N_PROMPTS = 40
WORDS = "alpha beta gamma delta river stone cloud seven orange piano window".split()


def corpus() -> pd.DataFrame:
    """40 prompts x 3 teachers whose responses have 6, 5 and 4 sentences (by length,
    `long` leads by a margin every prompt repeats), and one row with neither prompt id
    nor prompt (a reject, never lost)."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(N_PROMPTS):
        prompt = f"Question {p}: " + " ".join(rng.choice(WORDS, 6))
        for teacher, n in (("long", 6), ("middle", 5), ("short", 4)):
            steps = [" ".join(rng.choice(WORDS, 4)) + "." for _ in range(n)]
            rows.append([f"q{p}", prompt, teacher, " ".join(steps), bool(p % 2)])
    rows.append([None, None, "short", "An answer to nothing.", True])
    return pd.DataFrame(rows, columns=["prompt_id", "prompt", "teacher", "response", "is_correct"])


def rank_config(student, tmp, run_id, **flags):
    return config(
        student,
        [tmp / "in"],
        tmp / "out",
        run_id=run_id,
        rank_teachers=True,
        rank_block=5,
        commit_rows=4,
        **flags,
    )


@pytest.fixture(scope="module")
def runs(ray_local, tiny_student, tmp_path_factory):
    """The corpus scored whole, and ranked by length (a signal the data decide exactly)."""
    tmp = tmp_path_factory.mktemp("ranking")
    (tmp / "in").mkdir()
    df = corpus()
    df.iloc[:60].to_parquet(tmp / "in" / "a.parquet")
    df.iloc[60:].to_parquet(tmp / "in" / "b.parquet")
    full = run_job(config(tiny_student, [tmp / "in"], tmp / "out", run_id="full"))
    ranked = run_job(rank_config(tiny_student, tmp, "ranked", select_by="length"))
    return tmp, full, ranked


def block_scores(run_dir) -> pd.DataFrame:
    parts = [read_parquet_dir(str(d / "scores")) for d in sorted((run_dir / "rank").iterdir())]
    return pd.concat([p.to_pandas() for p in parts if p is not None]).set_index("row_id")


def test_a_clear_leader_stops_the_ranking_early_with_the_full_runs_top(runs):
    tmp, full, ranked = runs
    r = ranked["ranking"]
    # the lead is exact, so the first test (10 prompts) separates it
    assert r["stopped"] == "separated" and r["prompts_scored"] == 10 and r["blocks"] == 2
    assert r["prompts"] == N_PROMPTS and r["rows"] == 3 * N_PROMPTS + 1
    assert r["top"] == "long" and min(r["lead_lower_bounds"].values()) > 0
    board = json.loads((tmp / "out" / "full" / "teachers.json").read_text())
    best = min(board["per_teacher"], key=lambda t: board["per_teacher"][t]["length"]["rank"])
    assert best == r["top"]
    c = ranked["counts"]
    assert c["scored"] == 30 and c["rejected"] == 1  # its 10 prompts' rows and the reject
    assert ranked["counts"]["prompts"] == 10 and ranked["counts"]["selected"] == 0
    assert f"ranking: 10 of {N_PROMPTS} prompts (2 blocks of 5): long is ahead" in ranked["report"]
    assert not (tmp / "out" / "ranked" / "selected").exists()
    # a block's rows are scored as the full run scored them (calls of other shapes: within
    # float32's summation noise, docs/method.md §10)
    mine = block_scores(tmp / "out" / "ranked")
    whole = read_parquet_dir(str(tmp / "out" / "full" / "scores")).to_pandas().set_index("row_id")
    assert len(mine) == 30 and mine["prompt_id"].nunique() == 10
    np.testing.assert_array_equal(mine["n_steps"], whole.loc[mine.index, "n_steps"])
    for column in ("local_nat", "global_nat"):
        np.testing.assert_allclose(mine[column], whole.loc[mine.index, column], rtol=1e-6)


def test_a_ranking_killed_in_a_block_resumes_to_the_same_ranking(runs, tiny_student):
    tmp, _, ranked = runs
    run_dir = tmp / "out" / "ranked"
    markers = sorted((run_dir / "rank" / "b0001" / "_done").glob("*.json"))
    assert len(markers) > 1
    (run_dir / "manifest.json").unlink()  # as if killed after the second block's first chunk
    for marker in markers[1:]:
        marker.unlink()
    before = json.loads((run_dir / "teachers.json").read_text())
    again = run_job(rank_config(tiny_student, tmp, "ranked", select_by="length"))
    assert again["ranking"] == ranked["ranking"]
    assert json.loads((run_dir / "teachers.json").read_text()) == before
    # this attempt scored only the lost chunks; each chunk counted once
    assert 0 < again["throughput"]["response_tokens_this_run"]
    assert (
        again["throughput"]["response_tokens_this_run"]
        < ranked["throughput"]["response_tokens_this_run"]
    )
    assert again["counts"]["model_tokens"] == ranked["counts"]["model_tokens"]
    assert again["counts"]["scored"] == ranked["counts"]["scored"]


def test_a_ranking_stopped_at_max_prompts_continues_to_more(runs, tiny_student):
    """By LN, stopped at 5 prompts (fewer than a test needs); asked for 10, the same run
    scores only the next block."""
    tmp, full, _ = runs
    first = run_job(rank_config(tiny_student, tmp, "ln", max_prompts=5))
    assert first["ranking"]["stopped"] == "max_prompts"
    assert first["ranking"]["prompts_scored"] == 5 and first["ranking"]["blocks"] == 1
    parts = sorted((tmp / "out" / "ln" / "rank" / "b0000" / "scores").iterdir())
    more = run_job(rank_config(tiny_student, tmp, "ln", max_prompts=10))
    assert more["ranking"]["prompts_scored"] == 10 and more["ranking"]["blocks"] == 2
    assert sorted((tmp / "out" / "ln" / "rank" / "b0000" / "scores").iterdir()) == parts
    assert more["counts"]["chunks_resumed"] > 0
    assert more["counts"]["scored"] - first["counts"]["scored"] == 3 * 5  # the new block's
    # the same settings again: the complete ranking is reported, nothing run
    same = run_job(rank_config(tiny_student, tmp, "ln", max_prompts=10))
    assert same["ranking"] == more["ranking"] and same["finished_utc"] == more["finished_utc"]


def test_the_dry_run_says_what_a_ranking_may_score(runs, tiny_student):
    tmp, _, _ = runs
    dry = run_job(rank_config(tiny_student, tmp, "dry", dry_run=True, max_prompts=20))
    assert dry["plan"]["rank"] == {
        "prompts": N_PROMPTS,
        "block_prompts": 5,
        "max_prompts": 20,
        "delta": 0.05,
    }
    assert dry["input_rows"] == 3 * N_PROMPTS + 1 and dry["model_tokens"] > 0
