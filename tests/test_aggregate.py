"""Selection and leaderboard on hand-made tables where the right answer is known."""

import math

import numpy as np
import pandas as pd
import pytest

from localnat.curate.leaderboard import kendall_tau_b, leaderboard
from localnat.curate.selection import duplicates, race, select, settle


def table(rows):
    """Rows of (row_id, prompt_id, teacher, local_nat, global_nat, is_correct[, rsr,
    global_entropy]); without the last two, those signals are a constant the test ignores."""
    columns = ["row_id", "prompt_id", "teacher", "local_nat", "global_nat", "is_correct"]
    df = pd.DataFrame(rows, columns=columns + ["rsr", "global_entropy"][: len(rows[0]) - 6])
    for signal in ("rsr", "global_entropy"):
        if signal not in df:
            df[signal] = 1.0
    df["content_hash"] = df["row_id"]
    return df


ROWS = [
    # prompt p1: B best on LN (tie with C broken by smaller row_id), A best on GN
    (1, "p1", "A", -1.0, -0.1, True),
    (5, "p1", "C", -0.5, -0.9, True),
    (3, "p1", "B", -0.5, -0.8, False),
    # prompt p2: A best on LN but incorrect
    (4, "p2", "A", -0.2, -0.5, False),
    (2, "p2", "B", -0.7, -0.4, True),
    (6, "p2", "C", -0.9, -0.3, True),
    # prompt p3: answered by A only (unmatched)
    (7, "p3", "A", -3.0, -3.0, True),
]


def test_select_local_with_ties_and_correctness():
    df = table(ROWS)
    got = select(df, "local").set_index("prompt_id")
    assert got.loc["p1", "row_id"] == 3  # tie at -0.5: smallest row_id wins
    assert got.loc["p2", "row_id"] == 4
    assert got.loc["p1", "n_candidates"] == 3
    correct = select(df, "local", correct_only=True).set_index("prompt_id")
    assert correct.loc["p1", "row_id"] == 5 and correct.loc["p2", "row_id"] == 2
    assert correct.loc["p2", "n_candidates"] == 2
    assert set(correct["selected_by"]) == {"local"}


def test_select_global_and_random_use_the_same_path():
    df = table(ROWS)
    assert select(df, "global").set_index("prompt_id").loc["p1", "row_id"] == 1
    a, b = select(df, "random", seed=1), select(df, "random", seed=1)
    assert a["row_id"].tolist() == b["row_id"].tolist()  # seeded
    picks = {tuple(select(df, "random", seed=s)["row_id"]) for s in range(20)}
    assert len(picks) > 1  # the seed matters
    assert len(a) == 3


def test_duplicates_keep_the_first_row_by_input_order():
    df = table(ROWS)
    df.loc[df.row_id == 6, "content_hash"] = 2  # row 6 repeats row 2
    d = duplicates(df)
    assert d.to_dict("records") == [{"row_id": 6, "duplicate_of": 2}]
    # with sources, "first" is file then row order, not the smaller row_id hash
    df["source"] = [f"s3://b/f{i % 2}.jsonl#{10 - i}" for i in range(len(df))]
    df.loc[df.row_id == 6, "source"] = "s3://b/f0.jsonl#1"  # before row 2 in file f0
    df.loc[df.row_id == 2, "source"] = "s3://b/f0.jsonl#12"
    assert duplicates(df).to_dict("records") == [{"row_id": 2, "duplicate_of": 6}]


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


def test_correctness_values_are_true_false_or_unknown_never_guessed():
    from localnat.curate.records import as_bool

    ok = (True, False, 1, 0, 1.0, 0.0, "true", " FALSE ", "1", "0", None, float("nan"))
    assert [as_bool(v) for v in ok] == [True, False] * 5 + [None, None]
    for bad in ("yes", "maybe", "", 2, 0.5, "t", [True]):
        with pytest.raises(ValueError, match="use true/false or 1/0"):
            as_bool(bad)


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
    from localnat.curate.report import markdown, ordered

    assert ordered(board)[-1] == "S" and set(ordered(board)[:3]) == set("ABC")
    assert "not ranked, too few shared prompts" in markdown(board, "x")


def test_a_small_matched_set_warns():
    rows = [(i, f"p{i}", "A", -1.0, -1.0, True) for i in range(12)]
    rows += [(100 + i, f"p{i}", "B", -1.0, -1.0, True) for i in range(3)]
    board = leaderboard(table(rows), seed=0, n_boot=50)  # two teachers: both stay ranked
    assert board["ranked"] == ["A", "B"] and board["n_matched_prompts"] == 3
    assert "only 3 of 12 prompts" in board["warning"]


def test_select_by_rsr_keeps_the_lowest():
    rows = [
        # p1: A has the best LN, B the lowest rsr, C no rsr (null never wins)
        (1, "p1", "A", -0.1, -0.1, True, 9.0, 1.0),
        (2, "p1", "B", -0.9, -0.9, True, 2.0, 1.0),
        (3, "p1", "C", -0.5, -0.5, True, None, 1.0),
        # p2: a tie on rsr goes to the smaller row_id
        (5, "p2", "A", -0.1, -0.1, True, 4.0, 1.0),
        (4, "p2", "B", -0.2, -0.2, True, 4.0, 1.0),
    ]
    got = select(table(rows), "rsr").set_index("prompt_id")
    assert got.loc["p1", "row_id"] == 2 and got.loc["p2", "row_id"] == 4
    assert set(got["selected_by"]) == {"rsr"}
    assert select(table(rows), "local").set_index("prompt_id").loc["p1", "row_id"] == 1


# Three teachers on two prompts. LN and GN order them A, B, C; rsr (lower is better) orders
# them C, B, A; entropy (lower is better) A, B, C.
SIGNAL_ROWS = [
    (1, "p1", "A", -0.4, -0.4, None, 3.0, 1.0),
    (2, "p1", "B", -0.9, -0.9, None, 2.5, 2.0),
    (3, "p1", "C", -1.4, -1.4, None, 1.0, 3.0),
    (4, "p2", "A", -0.6, -0.6, None, 3.0, 1.0),
    (5, "p2", "B", -1.1, -1.1, None, 1.5, 2.0),
    (6, "p2", "C", -1.6, -1.6, None, 1.0, 3.0),
]


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
    assert len(tau) == 6
    assert tau["local", "global"] == pytest.approx(1.0) == board["kendall_tau_b"]
    assert tau["local", "rsr"] == pytest.approx(-1.0)  # oriented: opposite orders
    assert tau["local", "entropy"] == pytest.approx(1.0)
    assert tau["rsr", "entropy"] == pytest.approx(-1.0)


def test_reports_show_every_signal_and_the_correlations():
    from localnat.curate.report import markdown, png

    board = leaderboard(table(SIGNAL_ROWS), seed=0, n_boot=100)
    text = markdown(board, "x")
    assert "| C | 1 | 1.000 (1.000, 1.000) | 3 | 3.000 (3.000, 3.000) |" in text
    assert "| local | 1 | 1.000 | -1.000 | 1.000 |" in text
    assert "| rsr | -1.000 | -1.000 | 1 | -1.000 |" in text
    assert png(board, "x")[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Sampled" not in text
    assert "sample of F = 0.2 " in markdown({**board, "sample_steps": 0.2}, "x")


def sampled(rows):
    """Rows of (row_id, prompt_id, local_nat, local_nat_se); dyadic values, so the bounds
    compare exactly."""
    df = pd.DataFrame(rows, columns=["row_id", "prompt_id", "local_nat", "local_nat_se"])
    df["teacher"] = "T" + df["row_id"].astype(str)
    df["is_correct"] = True
    for column in ("global_nat", "rsr", "global_entropy"):
        df[column] = 0.0
    return df


RACE = [
    (1, "far", -1.0, 0.125),  # lower -1.375
    (2, "far", -2.0, 0.125),  # upper -1.625 < -1.375: ruled out by the sample
    (3, "close", -1.0, 0.25),  # lower at z=1: -1.25
    (4, "close", -1.5, 0.25),  # upper at z=1: -1.25, exactly the best lower: survives
    (5, "close", -1.75, 0.0),  # exact, upper -1.75: out
    (6, "exact", -1.0, 0.0),
    (7, "exact", -1.0, 0.0),  # every survivor exact: the sample decides (tie -> row 6)
    (8, "mixed", -1.0, 0.0),
    (9, "mixed", -1.125, 0.125),  # upper -1.0 reaches the exact row: only 9 is rescored
]


def test_race_keeps_what_the_bounds_cannot_separate():
    got = race(sampled(RACE), z=1).set_index("row_id")
    assert sorted(got.index) == [1, 3, 4, 6, 7, 8, 9]
    assert got.loc[1, "settled_by"] == "sample" and not got.loc[1, "rescore"]  # one survivor
    assert got.loc[[3, 4], "settled_by"].eq("exact").all() and got.loc[[3, 4], "rescore"].all()
    assert got.loc[[6, 7], "settled_by"].eq("sample").all() and not got.loc[[6, 7], "rescore"].any()
    assert got.loc[[8, 9], "settled_by"].eq("exact").all()
    assert got.loc[9, "rescore"] and not got.loc[8, "rescore"]  # exact rows are never rescored
    # a narrower margin separates "close": row 4's upper -1.375 < row 3's lower -1.125
    narrow = race(sampled(RACE), z=0.5).set_index("row_id")
    assert 4 not in narrow.index and narrow.loc[3, "settled_by"] == "sample"
    # z = 0: only the point estimates count; the winner and exact ties survive
    assert sorted(race(sampled(RACE), z=0)["row_id"]) == [1, 3, 6, 7, 8]


def test_settle_chooses_on_the_exact_scores_of_the_survivors():
    survivors = race(sampled(RACE), z=1)
    # the exact pass reverses "close" (4 beats 3) and keeps "mixed" a tie (8 by row_id)
    exact = pd.DataFrame({"row_id": [3, 4, 9], "local_nat": [-1.4, -1.3, -1.0]})
    got = settle(survivors, exact).set_index("prompt_id")
    assert got["row_id"].to_dict() == {"far": 1, "close": 4, "exact": 6, "mixed": 8}
    assert got["settled_by"].to_dict() == {
        "far": "sample",
        "close": "exact",
        "exact": "sample",
        "mixed": "exact",
    }
    assert got.loc["close", "local_nat"] == -1.3  # the exact value, not the sampled -1.5
    with pytest.raises(ValueError, match="no exact LN"):
        settle(survivors, exact[exact.row_id != 9])


def test_race_respects_correctness():
    df = sampled(RACE)
    df.loc[df.row_id == 3, "is_correct"] = False  # the sample's leader on "close" is wrong
    got = race(df, z=1, correct_only=True).set_index("row_id")
    assert 3 not in got.index
    # then row 4's lower bound -1.75 meets the exact row 5: both race, only 4 is rescored
    assert got.loc[[4, 5], "settled_by"].eq("exact").all()
    assert got.loc[4, "rescore"] and not got.loc[5, "rescore"]
