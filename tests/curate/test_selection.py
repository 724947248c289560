"""Selection, racing's bounds and duplicates on hand-made tables where the right answer is known."""

import pandas as pd
import pytest

from localnat.curate.choose.selection import duplicates, race_pick, race_round, race_rounds, select
from localnat.testing.jobs import HAND_ROWS as ROWS
from localnat.testing.jobs import score_table as table


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
    # with row positions, "first" is file then row order, not the smaller row_id hash
    df["file_index"] = [i % 2 for i in range(len(df))]
    df["row_number"] = [10 - i for i in range(len(df))]
    df.loc[df.row_id == 6, ["file_index", "row_number"]] = (0, 1)  # before row 2 in file 0
    df.loc[df.row_id == 2, ["file_index", "row_number"]] = (0, 12)
    assert duplicates(df).to_dict("records") == [{"row_id": 2, "duplicate_of": 6}]


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


def sampled(rows):
    """Rows of (row_id, prompt_id, local_nat, local_nat_se); dyadic values, so the bounds
    compare exactly."""
    df = pd.DataFrame(rows, columns=["row_id", "prompt_id", "local_nat", "local_nat_se"])
    df["teacher"] = "T" + df["row_id"].astype(str)
    df["is_correct"] = True
    for column in ("global_nat", "rsr", "global_entropy", "local_nofirst", "global_nofirst"):
        df[column] = 0.0
    df["n_response_tokens"] = 100
    df["local_nat_df"] = 1e9  # the normal's bounds, in effect
    return df


RACE = [
    (1, "far", -1.0, 0.125),
    (2, "far", -2.0, 0.125),  # its upper bound is below row 1's lower: out
    (3, "close", -1.0, 0.25),
    (4, "close", -1.25, 0.25),  # the bounds overlap: both race on
    (5, "close", -3.0, 0.0),  # exact, far below: out
    (6, "exact", -1.0, 0.0),
    (7, "exact", -1.0, 0.0),  # every row exact: settled (tie -> row 6)
    (8, "mixed", -1.0, 0.0),
    (9, "mixed", -1.25, 0.125),  # reaches the exact row: races on
]


def looked(rows, epsilon=0.0, delta=0.01, rounds=4):
    df = sampled(rows)
    df["k"] = df.groupby("prompt_id")["row_id"].transform("size")
    return race_round(df, epsilon, delta, rounds).set_index("row_id")


def test_a_racing_round_drops_what_cannot_be_best_and_settles_what_the_bounds_decide():
    from scipy.stats import t

    got = looked(RACE)
    # the union bound over a prompt's k candidates and the rounds (docs/method.md §5.2)
    z = t.ppf(1 - 0.01 / (2 * 2 * 4), 1e9)
    assert got.loc[1, "lower"] == pytest.approx(-1.0 - z * 0.125)
    assert got["alive"].to_dict() == {1: True, 2: False, 3: True, 4: True, 5: False} | {
        6: True,
        7: True,
        8: True,
        9: True,
    }
    settled = got.groupby("prompt_id")["settled"].first().to_dict()
    assert settled == {"far": True, "close": False, "exact": True, "mixed": False}
    assert race_pick(got.reset_index()).set_index("prompt_id")["row_id"].to_dict() == {
        "far": 1,
        "close": 3,  # the best lower bound
        "exact": 6,  # a tie on exact LN: the smaller row_id
        "mixed": 8,
    }
    # epsilon: "close" settles once no rival's upper bound beats the leader's lower by more
    gap = got.loc[4, "upper"] - got.loc[3, "lower"]
    assert not looked(RACE, epsilon=gap - 1e-9).groupby("prompt_id")["settled"].first()["close"]
    assert looked(RACE, epsilon=gap + 1e-9).groupby("prompt_id")["settled"].first()["close"]


def test_wider_bounds_for_more_candidates_rounds_and_fewer_degrees_of_freedom():
    few = sampled(RACE).assign(local_nat_df=2.0, k=2)
    assert (race_round(few, 0.0, 0.01, 4)["lower"] < looked(RACE)["lower"].to_numpy()).any()
    narrow = looked(RACE, rounds=1)
    wide = looked(RACE, rounds=64)
    assert (
        wide.loc[1, "lower"] < narrow.loc[1, "lower"]
        and wide.loc[1, "upper"] > narrow.loc[1, "upper"]
    )
    assert race_rounds(0.1) == 5 and race_rounds(0.5) == 3 and race_rounds(1.0) == 2
