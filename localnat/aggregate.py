"""The reduce, on compact score columns: duplicates, response selection, teacher leaderboard.

Pure functions over a pandas DataFrame with columns row_id, prompt_id, teacher, is_correct,
content_hash, local_nat, global_nat (one row per scored response).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd

from .io import stable_id

METRICS = {"local": "local_nat", "global": "global_nat"}


def duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose (prompt_id, teacher, response) repeat an earlier row: row_id, duplicate_of."""
    first = df.groupby("content_hash")["row_id"].transform("min")
    dup = df["row_id"] != first
    return pd.DataFrame(
        {"row_id": df.loc[dup, "row_id"].to_numpy(), "duplicate_of": first[dup].to_numpy()}
    )


def select(df: pd.DataFrame, by: str = "local", seed: int = 0, correct_only: bool = False):
    """One row per prompt: the candidate with the highest score (ties: smallest row_id).

    `by="random"` draws a seeded candidate per prompt through the same code path.
    Returns row_id, prompt_id, local_nat, global_nat, n_candidates, selected_by.
    """
    cand = df[df["is_correct"].fillna(False).astype(bool)] if correct_only else df
    cand = cand.copy()
    if by == "random":
        cand["_key"] = [-(stable_id(seed, r) / 2**63) for r in cand["row_id"]]
    else:
        cand["_key"] = cand[METRICS[by]]
    cand = cand.sort_values(["prompt_id", "_key", "row_id"], ascending=[True, False, True])
    n = cand.groupby("prompt_id").size().rename("n_candidates")
    best = cand.drop_duplicates("prompt_id").join(n, on="prompt_id")
    best["selected_by"] = by
    cols = [
        "row_id",
        "prompt_id",
        "teacher",
        "local_nat",
        "global_nat",
        "n_candidates",
        "selected_by",
    ]
    return best[cols].reset_index(drop=True)


def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b (ties in either ranking handled), nan for fewer than 2 items."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    concordant = discordant = tie_x = tie_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            tie_x += 1
        elif dy == 0:
            tie_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    denom = np.sqrt((concordant + discordant + tie_x) * (concordant + discordant + tie_y))
    return float((concordant - discordant) / denom) if denom else float("nan")


def leaderboard(df: pd.DataFrame, seed: int = 0, n_boot: int = 1000) -> dict:
    """Teacher scores on matched prompts (answered by every teacher), responses averaged
    within a prompt first; mean, bootstrap 95% CI over prompts, median, rank, pairwise win
    rates, for local and global naturalness; Kendall tau-b between the two rankings."""
    teachers = sorted(df["teacher"].unique())
    per_prompt = {
        m: df.pivot_table(index="prompt_id", columns="teacher", values=m, aggfunc="mean")[teachers]
        for m in METRICS.values()
    }
    matched_mask = per_prompt["local_nat"].notna().all(axis=1)
    matched = bool(matched_mask.sum())
    out = {
        "teachers": teachers,
        "n_prompts": int(df["prompt_id"].nunique()),
        "n_matched_prompts": int(matched_mask.sum()),
        "matched": matched,
        "warning": None
        if matched
        else "no prompt is answered by every teacher: means are "
        "over each teacher's own prompts and are not comparable",
        "bootstrap": {"n": n_boot, "seed": seed, "level": 0.95},
        "per_teacher": {
            t: {
                "n_responses": int((df["teacher"] == t).sum()),
                "n_prompts": int(df.loc[df["teacher"] == t, "prompt_id"].nunique()),
            }
            for t in teachers
        },
    }
    if df["is_correct"].notna().any():
        acc = df.groupby("teacher")["is_correct"].apply(lambda s: s.dropna().astype(float).mean())
        for t in teachers:
            out["per_teacher"][t]["accuracy"] = _num(acc.get(t))
    means = {}
    for key, metric in METRICS.items():
        table = per_prompt[metric][matched_mask] if matched else per_prompt[metric]
        stats = _teacher_stats(table, seed, n_boot)
        means[key] = [stats[t]["mean"] for t in teachers]
        for t in teachers:
            out["per_teacher"][t][key] = stats[t]
    out["kendall_tau_b"] = _num(kendall_tau_b(means["local"], means["global"]))
    return out


def _teacher_stats(table: pd.DataFrame, seed: int, n_boot: int) -> dict:
    with warnings.catch_warnings():  # all-nan columns (unmatched teachers) give nan, fine
        warnings.simplefilter("ignore", RuntimeWarning)
        return _stats(table, seed, n_boot)


def _stats(table: pd.DataFrame, seed: int, n_boot: int) -> dict:
    values = table.to_numpy(dtype=float)  # [prompts, teachers], nan where unanswered
    rng = np.random.default_rng(seed)
    n = len(values)
    boot = None
    if n:  # resample prompts in chunks: [chunk, n, teachers] stays small for big corpora
        chunk = max(1, 2_000_000 // max(1, n * values.shape[1]))
        boot = np.concatenate(
            [
                np.nanmean(values[rng.integers(0, n, size=(min(chunk, n_boot - s), n))], axis=1)
                for s in range(0, n_boot, chunk)
            ]
        )
    mean = np.nanmean(values, axis=0) if n else np.full(values.shape[1], np.nan)
    order = np.argsort(-np.nan_to_num(mean, nan=-np.inf), kind="stable")
    rank = np.empty(len(mean), dtype=int)
    rank[order] = np.arange(1, len(mean) + 1)
    out = {}
    for j, t in enumerate(table.columns):
        wins = {}
        for k, other in enumerate(table.columns):
            if k != j:
                both = ~np.isnan(values[:, j]) & ~np.isnan(values[:, k])
                a, b = values[both, j], values[both, k]
                wins[other] = _num(((a > b) + 0.5 * (a == b)).mean()) if both.any() else None
        out[t] = {
            "mean": _num(mean[j]),
            "ci95": [
                _num(np.nanpercentile(boot[:, j], 2.5)),
                _num(np.nanpercentile(boot[:, j], 97.5)),
            ]
            if boot is not None
            else [None, None],
            "median": _num(np.nanmedian(values[:, j])) if n else None,
            "rank": int(rank[j]),
            "win_rate": wins,
        }
    return out


def _num(x):
    return None if x is None or not np.isfinite(x) else float(x)
