"""Which signal to trust on this data (docs/method.md §7.1): with a correctness column, how
well each per-row signal tells a prompt's correct answers from its incorrect ones, against
random choice and against length. Pure functions over the reduce's compact columns.

    informative prompt   at least one correct and one incorrect candidate
    auc                  mean over informative prompts of P(a correct candidate outscores an
                         incorrect one), ties 1/2; each signal oriented so higher is better
    top1_accuracy        share of informative prompts whose best candidate is correct
    length_spearman      Spearman between the oriented signal and n_response_tokens
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..signals import SIGNALS, number
from .leaderboard import kendall_tau_b, resampled_means

MIN_PROMPTS = 10  # informative prompts below which no verdict is drawn


def validation(df: pd.DataFrame, board: dict, seed: int = 0, n_boot: int = 1000) -> dict | None:
    """teachers.json's `validation`, or None when no candidate has a known correctness."""
    needed = ["row_id", "prompt_id", "is_correct", "n_response_tokens"]
    keys = board.get("signals_computed") or list(SIGNALS)
    needed += [SIGNALS[k].column for k in keys]
    known = df.loc[df["is_correct"].notna(), list(dict.fromkeys(needed))]  # not every column
    if known.empty:
        return None
    correct = known["is_correct"].astype(bool)
    per_prompt = correct.groupby(known["prompt_id"]).agg(["any", "all"])
    informative = per_prompt.index[per_prompt["any"] & ~per_prompt["all"]]
    rows = known[known["prompt_id"].isin(informative)]
    out = {
        "informative_prompts": int(len(informative)),
        "candidates": int(len(rows)),
        "random_top1_accuracy": _num(
            rows["is_correct"].astype(float).groupby(rows["prompt_id"]).mean().mean()
        ),
        "bootstrap": {"n": n_boot, "seed": seed, "level": 0.95},
        "signals": {},
    }
    for key in keys:
        signal = SIGNALS[key]
        sign = 1.0 if signal.higher_is_better else -1.0
        out["signals"][key] = _signal(
            rows,
            known,
            sign * rows[signal.column].astype(float),
            sign * known[signal.column].astype(float),
            seed=seed,
            n_boot=n_boot,
        )
        out["signals"][key]["teacher_tau_vs_accuracy"] = _tau(board, key, sign)
    return out


def _signal(rows, known, oriented: pd.Series, oriented_all: pd.Series, *, seed, n_boot) -> dict:
    aucs, tops = _per_prompt(rows, oriented)
    ok = ~np.isnan(aucs)
    lengths = known["n_response_tokens"].astype(float)
    both = oriented_all.notna() & lengths.notna()
    return {
        "auc": _num(aucs[ok].mean()) if ok.any() else None,
        "auc_ci95": _bootstrap(aucs[ok], seed, n_boot),
        "top1_accuracy": _num(np.nanmean(tops)) if np.isfinite(tops).any() else None,
        "length_spearman": _spearman(oriented_all[both], lengths[both]),
        "prompts": int(ok.sum()),
    }


def _per_prompt(rows: pd.DataFrame, v: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt, in prompt_id order: the AUC (NaN where the signal scored no pair) and
    whether the best candidate is correct (NaN where it scored none). A candidate without a
    score never wins, as in `select`; the best is the highest value, then the lowest row_id.
    AUC by ranks (Mann-Whitney): (sum of the correct ones' mid-ranks - g(g+1)/2) / (g b)
    counts the pairs a correct answer wins and half the ties, without forming the pairs."""
    prompts = pd.Index(rows["prompt_id"].unique()).sort_values()
    s = pd.DataFrame(
        {
            "p": rows["prompt_id"].to_numpy(),
            "v": v.to_numpy(),
            "good": rows["is_correct"].astype(bool).to_numpy(),
            "row_id": rows["row_id"].to_numpy(),
        }
    )
    s = s[s["v"].notna()]
    rank = s.groupby("p")["v"].rank(method="average")
    per = (
        s.assign(g=s["good"].astype(float), rg=rank.where(s["good"], 0.0))
        .groupby("p")
        .agg(g=("g", "sum"), n=("g", "size"), rg=("rg", "sum"))
    )
    g, b = per["g"], per["n"] - per["g"]
    auc = ((per["rg"] - g * (g + 1) / 2) / (g * b)).where((g > 0) & (b > 0))
    best = s.sort_values(["p", "v", "row_id"], ascending=[True, False, True])
    top = best.drop_duplicates("p").set_index("p")["good"].astype(float)
    return (
        auc.reindex(prompts).to_numpy(float),
        top.reindex(prompts).to_numpy(float),
    )


def _bootstrap(values: np.ndarray, seed: int, n_boot: int) -> list:
    """Percentile CI of the mean over prompts: the leaderboard's seeded resampling."""
    if not len(values):
        return [None, None]
    means = resampled_means(values[:, None], seed, n_boot)[:, 0]
    return [_num(np.percentile(means, 2.5)), _num(np.percentile(means, 97.5))]


def _spearman(x: pd.Series, y: pd.Series) -> float | None:
    from scipy.stats import spearmanr

    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return None
    return _num(spearmanr(x, y).statistic)


def _tau(board: dict, key: str, sign: float) -> float | None:
    """Kendall tau-b between the signal's teacher ranking and the teachers' accuracy (both
    oriented: +1 = the signal ranks the more accurate teachers first)."""
    teachers = board.get("ranked") or []
    accuracy = [board["per_teacher"][t].get("accuracy") for t in teachers]
    means = [board["per_teacher"][t][key]["mean"] for t in teachers]
    pairs = [(sign * m, a) for m, a in zip(means, accuracy) if m is not None and a is not None]
    if len(pairs) < 2:
        return None
    return _num(kendall_tau_b([m for m, _ in pairs], [a for _, a in pairs]))


def verdict(validation: dict | None, select_by: str) -> list[str]:
    """The validation in sentences a user acts on: the signal that separates correct from
    incorrect answers best, whether it beats length and random, and a warning when the
    signal selection uses does no better than random."""
    if not validation or not validation["informative_prompts"]:
        return []
    signals = {k: v for k, v in validation["signals"].items() if v["auc"] is not None}
    if not signals:
        return []
    n, random = validation["informative_prompts"], validation["random_top1_accuracy"]
    if n < MIN_PROMPTS:  # a bootstrap over so few prompts has no spread to speak of
        return [
            f"Only {n} informative prompt{'s' * (n != 1)} (a correct and an incorrect answer "
            f"each): too few to tell the signals apart (at least {MIN_PROMPTS}); the figures "
            "are in teachers.json `validation`."
        ]
    best = max(signals, key=lambda k: signals[k]["auc"])
    s = signals[best]
    lo, hi = s["auc_ci95"]
    length = signals.get("length", {}).get("auc")
    lines = [
        f"On {n} informative prompts (a correct and an incorrect answer each), {best} "
        f"separates correct from incorrect answers best: AUC {s['auc']:.2f} (95% CI "
        f"{number(lo, 2)}-{number(hi, 2)}), top-1 accuracy {number(s['top1_accuracy'], 2)} against "
        f"{number(random, 2)} for a random pick."
    ]
    if best != "length" and length is not None:
        beats = lo is not None and lo > length
        lines.append(
            f"It {'beats' if beats else 'does not clearly beat'} length (AUC {length:.2f})"
            f"{'' if beats else ': its CI reaches length'}; it "
            + (
                "beats random (0.5)."
                if lo is not None and lo > 0.5
                else "is not clearly better than random (0.5)."
            )
        )
    chosen = signals.get(select_by)
    if chosen is not None:
        c_lo = chosen["auc_ci95"][0]
        worse = chosen["top1_accuracy"] is not None and random is not None
        if (c_lo is None or c_lo <= 0.5) and (not worse or chosen["top1_accuracy"] <= random):
            lines.append(
                f"Warning: --select-by {select_by} does no better than random on this data "
                f"(AUC {chosen['auc']:.2f}, CI {number(c_lo, 2)}-"
                f"{number(chosen['auc_ci95'][1], 2)}; top-1 "
                f"{number(chosen['top1_accuracy'], 2)} vs {number(random, 2)} random): the "
                "natural answer "
                "is not the correct one here; consider --select-by "
                f"{best if best != select_by else 'random'}."
            )
    return lines


def _num(x):
    return None if x is None or not np.isfinite(x) else float(x)
