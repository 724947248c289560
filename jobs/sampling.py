"""Step sampling against exact scoring on the same rows (`python -m jobs.benchmark --sampling`).

Per fraction F: model tokens relative to exact, Kendall tau-b between the teacher rankings
(teacher score: mean over prompts of its mean LN per prompt, docs/method.md §7), calibration
(share of sampled rows whose exact LN lies within 2 se of the estimate) and the share of
prompts whose best-LN response is the exact one's. Unlike the GPU check it needs the full
install (scipy, through the leaderboard's tau-b).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq

from localnat import Scorer


def load_rows(path: str, n: int, max_chars: int) -> list[dict]:
    """The first n long-CoT rows with their teacher and prompt id, responses cut."""
    rows = [r for r in pq.read_table(path).to_pylist() if r.get("long_cot", True)][:n]
    return [{**r, "response": r["response"][:max_chars]} for r in rows]


def teacher_means(rows: list[dict], ln: np.ndarray) -> dict[str, float]:
    """Per teacher, the mean over prompts of its mean LN on that prompt."""
    per: dict[str, dict[str, list[float]]] = {}
    for row, value in zip(rows, ln):
        per.setdefault(row["teacher"], {}).setdefault(row["prompt_id"], []).append(value)
    return {t: float(np.mean([np.mean(v) for v in p.values()])) for t, p in per.items()}


def best_per_prompt(rows: list[dict], ln: np.ndarray) -> dict[str, int]:
    """Per prompt, the index of the row with the highest LN (ties: the first)."""
    best: dict[str, int] = {}
    for i, row in enumerate(rows):
        j = best.get(row["prompt_id"])
        if j is None or ln[i] > ln[j]:
            best[row["prompt_id"]] = i
    return best


def compare(rows, exact: list[dict], sampled: list[dict]) -> dict:
    """The sampled run's agreement with the exact one."""
    from localnat.curate.leaderboard import kendall_tau_b

    ln_exact = np.array([r["local_nat"] for r in exact])
    ln = np.array([r["local_nat"] for r in sampled])
    se = np.array([r["local_nat_se"] for r in sampled])
    exact_means, means = teacher_means(rows, ln_exact), teacher_means(rows, ln)
    teachers = sorted(exact_means)
    drawn = se > 0  # rows with steps left out; the others are exact
    exact_best, best = best_per_prompt(rows, ln_exact), best_per_prompt(rows, ln)
    return {
        "tau_b": kendall_tau_b([exact_means[t] for t in teachers], [means[t] for t in teachers]),
        "sampled_rows": int(drawn.sum()),
        "calibration": float(np.mean(np.abs(ln_exact - ln)[drawn] <= 2 * se[drawn]))
        if drawn.any()
        else None,
        "same_selection": float(np.mean([exact_best[p] == best[p] for p in exact_best])),
    }


def run(cfg, model, tok, rows: list[dict], fractions: list[float]) -> None:
    """Score the rows exactly, then at each fraction; print one table row per fraction."""

    def score(config):
        scorer = Scorer(config, model=model, tokenizer=tok)
        out = scorer.score([r["prompt"] for r in rows], [r["response"] for r in rows])
        return out.to_pylist(), scorer.stats["tokens"]

    exact, exact_tokens = score(cfg)
    print(
        f"{len(rows)} rows, {len({r['prompt_id'] for r in rows})} prompts, "
        f"{len({r['teacher'] for r in rows})} teachers; exact: {exact_tokens:,} model tokens"
    )
    print("| F | model tokens vs exact | tau-b vs exact | calibration (2 se) | same selection |")
    print("|---|---|---|---|---|")
    for fraction in fractions:
        sampled, tokens = score(replace(cfg, sample_steps=fraction))
        c = compare(rows, exact, sampled)
        calibration = "n/a" if c["calibration"] is None else f"{100 * c['calibration']:.0f}%"
        print(
            f"| {fraction:g} | {100 * tokens / exact_tokens:.0f}% | {c['tau_b']:.3f} | "
            f"{calibration} of {c['sampled_rows']} sampled rows | "
            f"{100 * c['same_selection']:.0f}% |"
        )
