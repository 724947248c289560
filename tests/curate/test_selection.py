"""Selection, racing's bounds and duplicates on hand-made tables where the right answer is known."""

import pandas as pd
import pytest

from localnat.curate.selection import duplicates, race, select, settle
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
