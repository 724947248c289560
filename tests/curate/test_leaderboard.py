"""The teacher leaderboard on hand-made tables where the right answer is known."""

import math
from itertools import combinations

import numpy as np
import pytest

from localnat.curate.choose.leaderboard import kendall_tau_b, leaderboard
from localnat.curate.signals import SIGNALS
from localnat.testing.jobs import HAND_ROWS as ROWS
from localnat.testing.jobs import SIGNAL_ROWS
from localnat.testing.jobs import score_table as table


def test_leaderboard_on_matched_prompts():
    board = leaderboard(table(ROWS), seed=0, n_boot=200)
    assert board["n_prompts"] == 3 and board["n_matched_prompts"] == 2
    per = board["per_teacher"]
    # A: mean of p1, p2 only (p3 unmatched): (-1.0 + -0.2) / 2
    assert per["A"]["local"]["mean"] == pytest.approx(-0.6)
    assert per["B"]["local"]["mean"] == pytest.approx(-0.6)
    assert per["C"]["local"]["mean"] == pytest.approx(-0.7)
    assert per["C"]["local"]["rank"] == 3
    assert per["A"]["global"]["rank"] == 1  # (-0.1 - 0.5) / 2 = -0.3
    lo, hi = per["C"]["local"]["ci95"]
    assert -0.9 <= lo <= -0.7 <= hi <= -0.5
    # A beats B on p2, loses on p1 -> 0.5; C vs B: tie on p1 (0.5) and loses p2 -> 0.25
    assert per["A"]["local"]["win_rate"]["B"] == pytest.approx(0.5)
    assert per["C"]["local"]["win_rate"]["B"] == pytest.approx(0.25)
    assert per["A"]["accuracy"] == pytest.approx(2 / 3)
    assert per["A"]["n_responses"] == 3


def test_responses_within_a_prompt_are_averaged_first():
    rows = ROWS[:6] + [(8, "p1", "A", -3.0, -3.0, True), (9, "p1", "A", -3.0, -3.0, True)]
    per = leaderboard(table(rows), n_boot=10)["per_teacher"]
    # p1 for A: mean(-1, -3, -3) = -7/3; then with p2 (-0.2): (-7/3 - 0.2) / 2
    assert per["A"]["local"]["mean"] == pytest.approx((-7 / 3 - 0.2) / 2)


def test_no_matched_prompt_is_flagged():
    rows = [(1, "p1", "A", -1.0, -1.0, None), (2, "p2", "B", -2.0, -2.0, None)]
    board = leaderboard(table(rows), n_boot=10)
    assert not board["matched"] and "not comparable" in board["warning"]
    assert board["per_teacher"]["A"]["local"]["mean"] == -1.0


def test_kendall_tau_b_known_values():
    assert kendall_tau_b([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # one swapped pair of 6: (5 - 1) / 6
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    # a tie in y: 5 concordant, 1 tied pair -> 5 / sqrt(6 * 5) (scipy gives 0.9128709)
    assert kendall_tau_b([1, 2, 3, 4], [1, 2, 2, 4]) == pytest.approx(5 / math.sqrt(30))
    assert np.isnan(kendall_tau_b([1], [1]))


def test_one_sparse_teacher_cannot_collapse_the_leaderboard():
    base = leaderboard(table(ROWS), seed=0, n_boot=200)
    # S answered only p3, which B and C did not: matched by everyone would be no prompt
    sparse = table(ROWS + [(8, "p3", "S", -0.1, -0.1, True)])
    board = leaderboard(sparse, seed=0, n_boot=200)
    assert board["ranked"] == ["A", "B", "C"] and board["unranked"] == ["S"]
    assert board["n_matched_prompts"] == 2 and "only 2 of 3 prompts" in board["warning"]
    for t in "ABC":  # the ranked teachers' statistics are those without S
        assert board["per_teacher"][t]["local"] == base["per_teacher"][t]["local"]
    s = board["per_teacher"]["S"]
    assert s["local"]["rank"] is None and s["local"]["mean"] == pytest.approx(-0.1)
    assert s["n_prompts"] == 1
    # reports list S apart, after the ranked teachers
    from localnat.curate.report.render import markdown, ordered

    assert ordered(board)[-1] == "S" and set(ordered(board)[:3]) == set("ABC")
    assert "not ranked, too few shared prompts" in markdown(board, "x")


def test_a_small_matched_set_warns():
    rows = [(i, f"p{i}", "A", -1.0, -1.0, True) for i in range(12)]
    rows += [(100 + i, f"p{i}", "B", -1.0, -1.0, True) for i in range(3)]
    board = leaderboard(table(rows), seed=0, n_boot=50)  # two teachers: both stay ranked
    assert board["ranked"] == ["A", "B"] and board["n_matched_prompts"] == 3
    assert "only 3 of 12 prompts" in board["warning"]


def test_leaderboard_ranks_every_signal_in_its_direction():
    board = leaderboard(table(SIGNAL_ROWS), seed=0, n_boot=100)
    per = board["per_teacher"]
    assert [per[t]["local"]["rank"] for t in "ABC"] == [1, 2, 3]
    assert [per[t]["rsr"]["rank"] for t in "ABC"] == [3, 2, 1]  # lowest rsr ranks first
    assert [per[t]["entropy"]["rank"] for t in "ABC"] == [1, 2, 3]
    assert per["B"]["rsr"]["mean"] == pytest.approx(2.0)
    assert per["B"]["rsr"]["ci95"] == [pytest.approx(1.5), pytest.approx(2.5)]
    # B beats A on rsr on both prompts (lower), C on neither
    assert per["B"]["rsr"]["win_rate"] == {"A": 1.0, "C": 0.0}
    tau = {(p["a"], p["b"]): p["kendall_tau_b"] for p in board["rank_correlation"]}
    assert len(tau) == len(list(combinations(SIGNALS, 2)))  # every pair of signals
    assert tau["local", "global"] == pytest.approx(1.0) == board["kendall_tau_b"]
    assert tau["local", "rsr"] == pytest.approx(-1.0)  # oriented: opposite orders
    assert tau["local", "entropy"] == pytest.approx(1.0)
    assert tau["rsr", "entropy"] == pytest.approx(-1.0)
