"""Response selection, racing's bounds and duplicates (docs/method.md §5.2, §8): pure
functions over the compact score columns (pandas). Writing `selected/` is selected.py."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .columns import SELECTED_COLUMNS, SIGNALS
from .records import stable_id

# `--select-by` choices besides `random`: every per-row signal ranks responses
METRICS = SIGNALS


def duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose (prompt_id, prompt text, teacher, response) repeat an earlier row, earlier by
    input order
    (file, then row: `file_index` numbers files in URI order, `row_number` is the row's
    place in its file; without them, by row_id): row_id, duplicate_of."""
    if "row_number" in df:
        order = np.lexsort((df["row_number"].to_numpy(), df["file_index"].to_numpy()))
    else:
        order = np.argsort(df["row_id"].to_numpy(), kind="stable")
    # two int64 columns in input order, not the frame: the reduce holds a million rows
    ids = df["row_id"].to_numpy()[order]
    content = df["content_hash"].to_numpy()[order]
    if "prompt_key" in df:  # one prompt_id over two prompt texts: not the same response
        texts = pd.factorize(df["prompt_key"])[0][order]
        content = np.rec.fromarrays([content, texts], names="hash,text")
    _, first, inverse = np.unique(content, return_index=True, return_inverse=True)
    original = ids[first][inverse]  # each row's earliest row with the same content
    dup = ids != original
    return pd.DataFrame({"row_id": ids[dup], "duplicate_of": original[dup]})


def candidates(df: pd.DataFrame, correct_only: bool) -> pd.DataFrame:
    """The rows that compete for their prompt: the correct ones under a correctness column
    (unknown correctness does not compete), else all."""
    return df[df["is_correct"].fillna(False).astype(bool)] if correct_only else df


def select(df: pd.DataFrame, by: str = "local", seed: int = 0, correct_only: bool = False):
    """One row per prompt: the candidate with the best score (the highest, or the lowest for a
    lower-is-better signal such as rsr; ties: smallest row_id).

    `by="random"` draws a seeded candidate per prompt through the same code path.
    Returns prompt_id, teacher and SELECTED_COLUMNS (row_id, every signal, n_candidates,
    selected_by, settled_by: null here).
    """
    cand = candidates(df, correct_only)
    row_id = cand["row_id"].to_numpy()
    if by == "random":
        key = np.array([-(stable_id(seed, r) / 2**63) for r in row_id], dtype=float)
    else:
        signal = METRICS[by]
        key = cand[signal.column].to_numpy(dtype=float) * (1 if signal.higher_is_better else -1)
    # per prompt (in prompt_id order) the highest key first, no key last, then the
    # smallest row_id: an order of three arrays, never a sorted copy of the rows
    prompt, _ = pd.factorize(cand["prompt_id"], sort=True)
    order = np.lexsort((row_id, -key, prompt))
    first = order[np.r_[True, prompt[order][1:] != prompt[order][:-1]]] if len(order) else order
    columns = ["prompt_id", "teacher", *dict.fromkeys(c for c in SELECTED_COLUMNS if c in cand)]
    best = cand.iloc[first][columns].reset_index(drop=True)
    best["n_candidates"] = np.bincount(prompt)[prompt[first]]
    best["selected_by"] = by
    best["settled_by"] = None  # set by `settle` when the choice raced
    return best[["prompt_id", "teacher", *SELECTED_COLUMNS]]


def race(df: pd.DataFrame, z: float = 3.0, correct_only: bool = False) -> pd.DataFrame:
    """Racing selection on sampled LN (docs/method.md §5.2): per prompt, the candidates the
    sample cannot rule out. A candidate survives when its upper bound `local_nat + z * se`
    reaches the best lower bound `max(local_nat - z * se)` of its prompt: if every interval
    covers its row's exact LN, the exact best is among the survivors (its upper bound is at
    least its exact LN, which is at least the exact LN of the row with the best lower bound).

    Returns the survivors (the input rows, same columns) plus `rescore` (the row needs the
    exact pass: se > 0) and `settled_by` per prompt: 'sample' when the sample alone decides
    (one survivor, or every survivor already exact), else 'exact'.
    """
    cand = candidates(df, correct_only)
    # a row without a score cannot win (as in `select`, which sorts it last); a prompt with
    # no scored candidate keeps them all and `select` picks by row_id as it would anyway
    scored = cand["local_nat"].notna()
    se = cand["local_nat_se"].fillna(0.0)
    lower = (cand["local_nat"] - z * se).where(scored)
    upper = (cand["local_nat"] + z * se).where(scored)
    best_lower = lower.groupby(cand["prompt_id"]).transform("max")
    keep = (upper >= best_lower) | best_lower.isna()
    out = cand[keep].copy()
    out["rescore"] = se[keep] > 0
    needs_exact = out.groupby("prompt_id")["rescore"].transform("any")
    alone = out.groupby("prompt_id")["row_id"].transform("size") == 1
    out["settled_by"] = np.where(needs_exact & ~alone, "exact", "sample")
    out.loc[out["settled_by"] == "sample", "rescore"] = False  # decided: no exact pass
    return out


def settle(survivors: pd.DataFrame, exact: pd.DataFrame) -> pd.DataFrame:
    """The racing choice: per prompt the best survivor by LN, with the exact LN (`exact`:
    row_id, local_nat) of the rows that were rescored, through `select` itself (ties:
    smallest row_id). Returns `select`'s columns (n_candidates: the survivors) plus
    `settled_by`. A survivor marked for rescoring but missing from `exact` is an error, not a
    silent sampled value."""
    rows = survivors.copy()
    todo = rows["rescore"].to_numpy()
    values = exact.set_index("row_id")["local_nat"]
    missing_rows = set(rows.loc[todo, "row_id"]) - set(values.index)
    if missing_rows:
        raise ValueError(f"no exact LN for the rescored rows {sorted(missing_rows)[:5]}")
    rows.loc[todo, "local_nat"] = values.loc[rows.loc[todo, "row_id"]].to_numpy()
    rows.loc[todo, "local_nat_se"] = 0.0
    chosen = select(rows, "local")  # survivors are already the (correct) candidates
    settled = rows.drop_duplicates("prompt_id").set_index("prompt_id")["settled_by"]
    chosen["settled_by"] = chosen["prompt_id"].map(settled).to_numpy()
    return chosen
