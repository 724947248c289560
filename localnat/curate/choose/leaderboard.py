"""The teacher leaderboard (docs/method.md §7), on compact score columns.

Pure functions over a pandas DataFrame with columns row_id, prompt_id, teacher, is_correct,
content_hash and every signal's column (`columns.SIGNALS`; one row per scored response).
"""

from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
import pandas as pd

from ..signals import SIGNALS


def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b (ties in either ranking handled); nan for fewer than 2 items."""
    from scipy.stats import kendalltau

    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2:
        return float("nan")
    return float(kendalltau(x[keep], y[keep], variant="b").statistic)


def ranked_teachers(answered: pd.DataFrame, min_share: float) -> list[str]:
    """The teachers ranked together: all of them, unless the prompts every one answered (the
    matched set) are fewer than `min_share` of all prompts; then, one at a time, leave out
    the teacher whose absence enlarges the matched set most (ties: the one that answered
    fewest prompts), until the share is reached or two teachers remain. One sparse teacher
    therefore cannot shrink everyone's comparison to a handful of prompts."""
    keep = list(answered.columns)
    target = min_share * len(answered)
    while len(keep) > 2 and answered[keep].all(axis=1).sum() < target:

        def gain(t, keep=keep):
            rest = [k for k in keep if k != t]
            return answered[rest].all(axis=1).sum(), -answered[t].sum()

        keep.remove(max(keep, key=gain))
    return keep


def leaderboard(
    df: pd.DataFrame, *, seed: int = 0, n_boot: int = 1000, min_share=0.5, family=None, signals=None
) -> dict:
    """Teacher scores on matched prompts (answered by every ranked teacher, see
    `ranked_teachers`), responses averaged within a prompt first; mean, bootstrap 95% CI over
    prompts, median, rank, pairwise win rates, for every signal (local and global naturalness,
    rsr, entropy); Kendall tau-b between each pair of signals' rankings. Teachers left out of
    the ranking are listed apart, with their means over their own prompts and no rank.
    `signals`: the signals the run computed (`--signals`; length always): only those are
    reported (`signals_computed`)."""
    keys = computed(signals)
    teachers, per_prompt = _per_prompt(df, keys)
    answered = per_prompt["length"].notna()  # every scored row has its length
    ranked = ranked_teachers(answered, min_share)
    apart = [t for t in teachers if t not in ranked]
    matched_mask = answered[ranked].all(axis=1)
    n_matched, n_prompts = int(matched_mask.sum()), int(df["prompt_id"].nunique())
    matched = bool(n_matched)
    out = {
        "teachers": teachers,
        "ranked": ranked,
        "unranked": apart,
        "n_prompts": n_prompts,
        "n_matched_prompts": n_matched,
        "min_matched_share": min_share,
        "matched": matched,
        "warning": _warning(n_matched, n_prompts, min_share),
        "bootstrap": {"n": n_boot, "seed": seed, "level": 0.95},
        "signals_computed": keys,
        "per_teacher": _counts(df, teachers, answered),
    }
    _accuracy(df, out)

    def table(key, who, own_prompts=False):  # one signal's [prompts, teachers], when needed
        if own_prompts or not matched:
            return per_prompt[key][who]
        return per_prompt[key][who][matched_mask]

    boots = _resampled([table(k, ranked) for k in keys], keys, seed, n_boot)
    if apart:  # their own prompts: reported, not ranked
        own_boots = _resampled([table(k, apart, True) for k in keys], keys, seed, n_boot)
    oriented = {}  # per signal, the ranked teachers' means with "better" = larger
    for key in keys:
        signal = SIGNALS[key]
        sign = 1.0 if signal.higher_is_better else -1.0
        stats = _teacher_stats(table(key, ranked), boots[key], sign)
        oriented[key] = [sign * _nan(stats[t]["mean"]) for t in ranked]
        if apart:
            own = _teacher_stats(table(key, apart, True), own_boots[key], sign)
            stats.update({t: {**own[t], "rank": None, "win_rate": {}} for t in apart})
        for t in teachers:
            out["per_teacher"][t][key] = stats[t]
    rsr_dataset(df, out, ranked, matched_mask if matched else None)
    out["student_family"] = family
    for t in teachers:  # its label names the student's family: a likelihood signal favours it
        out["per_teacher"][t]["same_family_as_student"] = bool(family and family in t.lower())
    _rank_correlation(out, oriented)
    return out


def _counts(df: pd.DataFrame, teachers: list[str], answered: pd.DataFrame) -> dict:
    """Per teacher, its responses and the prompts it answered."""
    return {
        t: {"n_responses": int((df["teacher"] == t).sum()), "n_prompts": int(answered[t].sum())}
        for t in teachers
    }


def _per_prompt(df: pd.DataFrame, keys) -> tuple[list[str], dict]:
    """The teachers, and per signal its [prompt, teacher] means (NaN where a cell holds no
    value, or the table lacks the signal: local_nofirst under step sampling), by counting
    into cells of integer codes: a million rows' string keys are factorized once, with no
    grouped copies of the rows."""
    p_code, prompts = pd.factorize(df["prompt_id"], sort=True)
    t_code, teachers = pd.factorize(df["teacher"], sort=True)
    teachers = list(teachers)
    cell, shape = p_code * len(teachers) + t_code, (len(prompts), len(teachers))
    return teachers, {
        key: pd.DataFrame(
            _cell_means(df, SIGNALS[key].column, cell, shape), index=prompts, columns=teachers
        )
        for key in keys
    }


def _accuracy(df: pd.DataFrame, out: dict) -> None:
    if df["is_correct"].notna().any():
        acc = df.groupby("teacher")["is_correct"].apply(lambda s: s.dropna().astype(float).mean())
        for t in out["teachers"]:
            out["per_teacher"][t]["accuracy"] = _num(acc.get(t))


def _rank_correlation(out: dict, oriented: dict) -> None:
    """Kendall tau-b between each pair of signals' oriented teacher means: +1 always says
    two signals order the teachers alike."""
    keys = list(oriented)
    out["rank_correlation"] = [
        {"a": a, "b": b, "kendall_tau_b": _num(kendall_tau_b(oriented[a], oriented[b]))}
        for a, b in combinations(keys, 2)
    ]
    both = {"local", "global"} <= set(keys)
    out["kendall_tau_b"] = out["rank_correlation"][0]["kendall_tau_b"] if both else None


def computed(signals=None) -> list[str]:
    """The signals a run computed, in the registry's order (length always: a token count)."""
    return [k for k in SIGNALS if signals is None or k in signals or k == "length"]


def rsr_dataset(df: pd.DataFrame, out: dict, ranked: list[str], matched) -> None:
    """Per teacher the Rank-Surprisal Ratio as its paper aggregates it (arXiv 2601.14249,
    App. A.8): the sum of ranks over the sum of surprisals of all its responses on the
    matched prompts (its own prompts for a teacher left out of the ranking); ranked, lowest
    first, among the ranked teachers. Not the mean of per-row ratios (`rsr`)."""
    if not {"rank_sum", "surprisal_sum"} <= set(df.columns):
        return  # tables without the sums (hand-made ones): nothing to aggregate
    columns = ["rank_sum", "surprisal_sum"]
    own = df.groupby("teacher")[columns].sum()
    sums = own
    if matched is not None:  # the matched prompts' rows: two columns, not the whole table
        rows = df["prompt_id"].isin(matched[matched].index)
        sums = df.loc[rows, columns].groupby(df.loc[rows, "teacher"]).sum()
    value = {}
    for t in out["teachers"]:
        where = sums if t in ranked else own
        if t in where.index and where.loc[t, "surprisal_sum"] > 0:
            value[t] = float(where.loc[t, "rank_sum"] / where.loc[t, "surprisal_sum"])
    order = sorted((t for t in ranked if t in value), key=lambda t: (value[t], t))
    for t in out["teachers"]:
        rank = order.index(t) + 1 if t in order else None
        out["per_teacher"][t]["rsr_dataset"] = {"value": value.get(t), "rank": rank}


def _warning(n_matched: int, n_prompts: int, min_share: float) -> str | None:
    if not n_matched:
        return (
            "no prompt is answered by every ranked teacher: means are over each teacher's own "
            "prompts and are not comparable"
        )
    if n_matched < min(10, n_prompts) or n_matched < min_share * n_prompts:
        return (
            f"only {n_matched} of {n_prompts} prompts are answered by every ranked teacher: "
            "the ranking and its intervals rest on few prompts"
        )
    return None


def _cell_means(df: pd.DataFrame, column: str, cell: np.ndarray, shape) -> np.ndarray:
    """The mean of `column` in each [prompt, teacher] cell (`cell`: each row's flat cell),
    NaN where the cell holds no value (or the table no such column)."""
    if column not in df:
        return np.full(shape, np.nan)
    values = df[column].to_numpy(dtype=float)
    ok = ~np.isnan(values)
    size = shape[0] * shape[1]
    sums = np.bincount(cell[ok], weights=values[ok], minlength=size)
    counts = np.bincount(cell[ok], minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).reshape(shape)


def _resampled(tables: list, keys, seed: int, n_boot: int) -> dict:
    """Per signal (`keys`), `resampled_means` of its [prompts, teachers] table; the tables
    share their prompts, so every signal's resamples are drawn at once (the same draws as
    one signal alone: the same seed). Empties `tables`: their copies live in one array."""
    keys = list(keys)
    values = np.hstack([t.to_numpy(dtype=float) for t in tables])
    del tables[:]
    if not len(values):
        return {k: None for k in keys}
    with warnings.catch_warnings():  # a resample without a teacher's answers: nan, fine
        warnings.simplefilter("ignore", RuntimeWarning)
        boot = resampled_means(values, seed, n_boot, overwrite=True)
    return dict(zip(keys, np.split(boot, len(keys), axis=1)))


def _teacher_stats(table: pd.DataFrame, boot, sign: float) -> dict:
    with warnings.catch_warnings():  # all-nan columns (unmatched teachers) give nan, fine
        warnings.simplefilter("ignore", RuntimeWarning)
        return _stats(table, boot, sign)


def _stats(table: pd.DataFrame, boot, sign: float) -> dict:
    """Per teacher: mean, CI (from `boot`, [n_boot, teachers] resampled means, or None),
    median, rank and win rates; `sign` -1 makes lower better (rank 1 = lowest mean, a win =
    a lower score)."""
    values = table.to_numpy(dtype=float)  # [prompts, teachers], nan where unanswered
    n = len(values)
    mean = np.nanmean(values, axis=0) if n else np.full(values.shape[1], np.nan)
    order = np.argsort(-np.nan_to_num(sign * mean, nan=-np.inf), kind="stable")
    rank = np.empty(len(mean), dtype=int)
    rank[order] = np.arange(1, len(mean) + 1)
    out = {}
    for j, t in enumerate(table.columns):
        wins = {}
        for k, other in enumerate(table.columns):
            if k != j:
                both = ~np.isnan(values[:, j]) & ~np.isnan(values[:, k])
                a, b = sign * values[both, j], sign * values[both, k]
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


def resampled_means(values: np.ndarray, seed: int, n_boot: int, overwrite=False) -> np.ndarray:
    """values [rows, columns], nan where missing -> [n_boot, columns]: each column's mean
    over `n_boot` seeded resamples of the rows (nan where a resample holds none of its
    values). Drawn in chunks of about 1M draws: memory stays small for a big corpus.
    `overwrite`: `values` may be used as scratch (its NaNs become 0)."""
    rng = np.random.default_rng(seed)
    n = len(values)
    counts = (~np.isnan(values)).astype(float)
    sums = np.nan_to_num(values, copy=not overwrite)
    chunk = max(1, 1_000_000 // n)
    pieces = []
    for s in range(0, n_boot, chunk):
        k = min(chunk, n_boot - s)
        draws = rng.integers(0, n, size=(k, n)) + (np.arange(k) * n)[:, None]
        # times each row is drawn in each resample; a resample's means are then two matrix
        # products
        times = np.bincount(draws.ravel(), minlength=k * n).reshape(k, n).astype(float)
        pieces.append((times @ sums) / (times @ counts))
    return np.concatenate(pieces)


def _nan(x):
    return float("nan") if x is None else x


def _num(x):
    return None if x is None or not np.isfinite(x) else float(x)
