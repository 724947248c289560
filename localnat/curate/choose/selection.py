"""Response selection, racing's bounds and duplicates (docs/method.md §5.2, §8): pure
functions over the compact score columns (pandas). Writing `selected/` is dataset.py; the
racing rounds, racing.py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from ..inputs.records import stable_id
from ..signals import SELECTED_COLUMNS, SIGNALS

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
    return _best(cand, key, by)


def _best(cand: pd.DataFrame, key: np.ndarray, by: str) -> pd.DataFrame:
    """Per prompt (in prompt_id order) the row with the highest `key` (no key last), then
    the smallest row_id: an order of three arrays, never a sorted copy of the rows."""
    row_id = cand["row_id"].to_numpy()
    prompt, _ = pd.factorize(cand["prompt_id"], sort=True)
    order = np.lexsort((row_id, -key, prompt))
    first = order[np.r_[True, prompt[order][1:] != prompt[order][:-1]]] if len(order) else order
    columns = ["prompt_id", "teacher", *dict.fromkeys(c for c in SELECTED_COLUMNS if c in cand)]
    best = cand.iloc[first][columns].reset_index(drop=True)
    best["n_candidates"] = np.bincount(prompt)[prompt[first]]
    best["selected_by"] = by
    best["settled_by"] = None  # set by racing
    return best[["prompt_id", "teacher", *SELECTED_COLUMNS]]


def race_rounds(fraction: float) -> int:
    """How many estimates racing can make of one row before it is exact: the sample of a
    stratum (about 2 / F steps) holds two steps at round 0 and doubles each round."""
    return math.ceil(math.log2(1 / fraction + 1)) + 1


def race_round(rows: pd.DataFrame, epsilon: float, delta: float, rounds: int) -> pd.DataFrame:
    """One look at the rows still racing (docs/method.md §5.2): `rows` (row_id, prompt_id,
    local_nat, local_nat_se: 0 when exact, local_nat_df: its degrees of freedom, `k`: the
    prompt's candidates when the race began) -> the same rows with `lower`, `upper`, `alive`
    and, per prompt, `settled`.

    Bounds: local_nat -+ z se with z = Student's t quantile at 1 - delta / (2 k rounds) on
    the se's degrees of freedom: all of a prompt's intervals, over every round, hold together
    with probability 1 - delta (a union bound). A row leaves when its upper bound is below
    the prompt's best lower bound (it cannot be the best). A prompt settles when one row is
    left, every row left is exact, or no other row's upper bound is above the leader's (the
    best lower bound) lower bound by more than epsilon: then the leader's exact LN is within
    epsilon of the best's."""
    out = rows.copy()
    se = out["local_nat_se"].fillna(0.0).to_numpy()
    freedom = out["local_nat_df"].to_numpy(float)
    level = 1 - delta / (2 * out["k"].to_numpy(float) * rounds)
    with np.errstate(invalid="ignore"):
        z = np.where(se > 0, student_t.ppf(level, np.where(se > 0, freedom, 1.0)), 0.0)
    # a row without a score cannot win (as in `select`); it has no bounds and stays only
    # where no row has any, so the prompt is decided by row_id as `select` would
    out["lower"] = out["local_nat"] - z * se
    out["upper"] = out["local_nat"] + z * se
    prompt = out["prompt_id"]
    best_lower = out["lower"].groupby(prompt).transform("max")
    out["alive"] = (out["upper"] >= best_lower) | best_lower.isna()
    alive = out[out["alive"]]
    leader = _best(alive, alive["lower"].fillna(-np.inf).to_numpy(), "local")["row_id"]
    rival = alive["upper"].where(~alive["row_id"].isin(leader)).groupby(alive["prompt_id"]).max()
    exact = (alive["local_nat_se"].fillna(0.0) == 0).groupby(alive["prompt_id"]).all()
    lead = alive.groupby("prompt_id")["lower"].max()
    close = (rival.isna()) | (rival - lead <= epsilon) | exact
    out["settled"] = prompt.map(close).fillna(True).astype(bool).to_numpy()
    return out


MAX_ROUNDS = 40  # a sample doubles each round: any response is exact long before


def race(rows: pd.DataFrame, epsilon: float, delta: float, rounds: int, advance) -> tuple:
    """Racing to epsilon (docs/method.md §5.2), round by round: look (`race_round`), then
    `advance(t, todo)` the rows of undecided prompts that are not exact yet (-> {row_id:
    (local_nat, local_nat_se, local_nat_df)} with their samples at round t), until every
    prompt is settled. Returns the last look (for `race_pick`), each prompt's settling round
    and the rows advanced per round."""
    rows = rows.copy()
    rows["k"] = rows.groupby("prompt_id")["row_id"].transform("size")
    settled_at, per_round = {}, []
    for t in range(MAX_ROUNDS + 1):
        looked = race_round(rows, epsilon, delta, rounds)
        for prompt in looked.loc[looked["settled"], "prompt_id"].unique():
            settled_at.setdefault(prompt, t)
        live = looked[looked["alive"]]
        rows = live.drop(columns=["lower", "upper", "alive", "settled"])
        todo = rows[~live["settled"].to_numpy() & (rows["local_nat_se"].fillna(0) > 0).to_numpy()]
        if todo.empty:
            return looked, settled_at, per_round
        per_round.append(len(todo))
        estimates = advance(t + 1, todo)
        at = rows["row_id"].map(estimates)
        known = at.notna()
        for i, column in enumerate(("local_nat", "local_nat_se", "local_nat_df")):
            rows.loc[known, column] = [e[i] for e in at[known]]
    raise RuntimeError(f"racing: prompts still undecided after {MAX_ROUNDS} rounds (a bug)")


def race_pick(rows: pd.DataFrame) -> pd.DataFrame:
    """The racing choice: per prompt the row left with the best lower bound (an exact row's
    is its LN; ties: smallest row_id), with `select`'s columns."""
    alive = rows[rows["alive"]]
    return _best(alive, alive["lower"].fillna(-np.inf).to_numpy(), "local")
