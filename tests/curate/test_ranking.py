"""Teacher ranking that stops (docs/method.md §7.2): the seeded prompt order and its blocks,
and the stop rule held to a bound computed by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as student_t

from localnat.curate.choose.ranking import (
    MIN_PROMPTS,
    block_rows,
    looks,
    prompt_blocks,
    separation,
)
from localnat.curate.job_config import CurateConfig
from localnat.fields import OptionError


def table(means: dict, n: int, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """n prompts, one row per (prompt, teacher): the teacher's mean plus a shared prompt
    effect plus per-row noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        shared = rng.normal()
        for t, m in means.items():
            ln = m + shared + noise * rng.normal()
            rows.append({"prompt_id": f"p{p}", "teacher": t, "local_nat": ln})
    return pd.DataFrame(rows)


def board(teachers) -> dict:
    return {"ranked": list(teachers)}


def test_the_bound_is_a_student_t_bound_on_paired_differences_shrunk_by_the_sample_share():
    means = {"a": -1.0, "b": -1.3, "c": -1.2}
    df = table(means, 30, noise=0.2)
    got = separation(df, board(means), signal="local", delta=0.05, tests=4, fraction=0.3)
    assert got["top"] == "a" and got["matched_prompts"] == 30
    wide = df.pivot(index="prompt_id", columns="teacher", values="local_nat")
    for other in ("b", "c"):
        d = (wide["a"] - wide[other]).to_numpy()
        alpha = 0.05 / (4 * 2)  # every test, every other teacher
        se = d.std(ddof=1) / math.sqrt(30) * math.sqrt(1 - 0.3)
        want = d.mean() - student_t.ppf(1 - alpha, 29) * se
        assert got["lead_lower_bounds"][other] == pytest.approx(want, rel=1e-12)
    assert got["separated"] == all(v > 0 for v in got["lead_lower_bounds"].values())


def test_a_clear_lead_stops_only_from_the_least_prompts_on_and_a_tie_never():
    means = {"a": 0.0, "b": -1.0, "c": -2.0}
    for n in (MIN_PROMPTS - 1, MIN_PROMPTS):
        got = separation(
            table(means, n, 0.05),
            board(means),
            signal="local",
            delta=0.05,
            tests=10,
            fraction=n / 1000,
        )
        assert got["separated"] == (n >= MIN_PROMPTS)
    tie = {"a": 0.0, "b": 0.0}
    got = separation(
        table(tie, 500, 0.3), board(tie), signal="local", delta=0.05, tests=10, fraction=0.5
    )
    assert not got["separated"]
    # every prompt scored: the full ranking itself, whatever the count
    got = separation(
        table(means, 3, 0.05), board(means), signal="local", delta=0.05, tests=10, fraction=1.0
    )
    assert got["separated"] and got["top"] == "a"


def test_a_lower_is_better_signal_ranks_its_lowest_first():
    df = table({"a": 0.0, "b": -1.0}, 20, 0.01).rename(columns={"local_nat": "global_entropy"})
    got = separation(df, board("ab"), signal="entropy", delta=0.05, tests=1, fraction=0.1)
    assert got["top"] == "b" and got["separated"]


def test_only_prompts_every_ranked_teacher_answered_count():
    means = {"a": 0.0, "b": -1.0}
    df = table(means, 12, 0.01)
    df = df[~((df["teacher"] == "b") & df["prompt_id"].isin(["p0", "p1", "p2"]))]
    got = separation(df, board(means), signal="local", delta=0.05, tests=1, fraction=0.1)
    assert got["matched_prompts"] == 9 and not got["separated"]  # fewer than MIN_PROMPTS


def ids(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {"file_index": 0, "row_number": range(start, start + n), "prompt_id": map(str, range(n))}
    )


def test_the_prompt_order_is_seeded_and_new_prompts_never_reorder_the_others():
    cfg = CurateConfig(rank_teachers=True, rank_block=7).choosing
    first = sum(prompt_blocks(ids(60), cfg), [])
    assert sorted(first) == sorted(map(str, range(60))) and first != sorted(first)
    more = sum(prompt_blocks(ids(90), cfg), [])
    assert [p for p in more if p in set(first)] == first
    other = sum(prompt_blocks(ids(60), CurateConfig(rank_teachers=True, seed=1).choosing), [])
    assert other != first and sorted(other) == sorted(first)
    blocks = prompt_blocks(
        ids(60), CurateConfig(rank_teachers=True, rank_block=7, max_prompts=20).choosing
    )
    assert [len(b) for b in blocks] == [7, 7, 6] and sum(blocks, []) == first[:20]


def test_the_default_block_and_the_number_of_tests():
    cfg = CurateConfig(rank_teachers=True).choosing
    assert [len(b) for b in prompt_blocks(ids(12), cfg)] == [5, 5, 2]  # at least 5
    assert len(prompt_blocks(ids(1000), cfg)[0]) == 20  # 2%
    assert (
        looks(cfg, 1000) == 50
        and looks(CurateConfig(rank_teachers=True, max_prompts=70).choosing, 1000) == 4
    )


def test_the_first_block_holds_every_row_without_an_id_and_every_unread_file():
    rows = pd.DataFrame(
        [(0, 0, "a"), (0, 1, None), (0, 2, "b"), (1, 0, "a"), (2, None, None)],
        columns=["file_index", "row_number", "prompt_id"],
    )
    assert block_rows(rows, ["a"], first=True) == {0: [0, 1], 1: [0], 2: None}
    assert block_rows(rows, ["b"], first=False) == {0: [2]}


def test_ranking_options_are_checked_before_ray():
    with pytest.raises(OptionError, match="only with --rank-teachers"):
        CurateConfig(max_prompts=10)
    with pytest.raises(OptionError, match="must be >= 1"):
        CurateConfig(rank_teachers=True, rank_block=0)
    with pytest.raises(OptionError, match="rank-delta"):
        CurateConfig(rank_teachers=True, rank_delta=1.0)
    with pytest.raises(OptionError, match="chooses none"):
        CurateConfig(rank_teachers=True, race_epsilon=0.02)
    with pytest.raises(OptionError, match="random ranks nothing"):
        CurateConfig(rank_teachers=True, select_by="random")
