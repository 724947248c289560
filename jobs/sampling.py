"""Step sampling against exact scoring on the same rows (`python -m jobs.benchmark --sampling`).

Per fraction F: model tokens relative to exact, Kendall tau-b between the teacher rankings
(teacher score: mean over prompts of its mean LN per prompt, docs/method.md §7), calibration
(share of sampled rows whose exact LN lies within 2 se of the estimate) and the share of
prompts whose best-LN response is the exact one's. Then racing (docs/method.md §5.2): the
steps the sample left out of the candidates whose bounds it cannot separate are scored, a
real second pass as the job runs it; its row gives the model tokens of both passes relative
to exact and the share of prompts whose racing choice is the exact selection. Unlike the GPU
check it needs the full install (scipy, through the leaderboard's tau-b; pandas, through the
selection).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from localnat import Scorer


def load_rows(path: str, n: int, max_chars: int) -> list[dict]:
    """n long-CoT rows, prompt by prompt (in order of first appearance, so a file sorted by
    teacher still gives every teacher of the first prompts), with their teacher and prompt
    id, responses cut."""
    rows = [r for r in pq.read_table(path).to_pylist() if r.get("long_cot", True)]
    first = {}
    for r in rows:
        first.setdefault(r["prompt_id"], len(first))
    rows = sorted(rows, key=lambda r: first[r["prompt_id"]])[:n]  # stable: file order within
    return [{**r, "response": r["response"][:max_chars]} for r in rows]


def frame(rows: list[dict], scored: list[dict]) -> pd.DataFrame:
    """The rows and their scores as the job's reduce sees them (row_id = the row's index;
    every candidate competes, as in an exact selection)."""
    from localnat.curate.columns import REDUCE_COLUMNS

    df = pd.DataFrame(
        {
            "row_id": range(len(rows)),
            "prompt_id": [r["prompt_id"] for r in rows],
            "teacher": [r["teacher"] for r in rows],
            "is_correct": True,
            "content_hash": range(len(rows)),
        }
    )
    for column in REDUCE_COLUMNS:
        if column not in df and column in scored[0]:
            df[column] = [r[column] for r in scored]
    return df


def teacher_means(rows: list[dict], scored: list[dict]) -> dict[str, float]:
    """Per teacher its LN score: the leaderboard's (docs/method.md §7)."""
    from localnat.curate.leaderboard import leaderboard

    board = leaderboard(frame(rows, scored), n_boot=1, min_share=0.0)
    return {t: board["per_teacher"][t]["local"]["mean"] for t in board["teachers"]}


def best_per_prompt(rows: list[dict], scored: list[dict]) -> dict[str, int]:
    """Per prompt the row `select` keeps by LN (ties: the smallest row_id, the first)."""
    from localnat.curate.selection import select

    chosen = select(frame(rows, scored), "local")
    return dict(zip(chosen["prompt_id"], chosen["row_id"]))


def compare(rows, exact: list[dict], sampled: list[dict]) -> dict:
    """The sampled run's agreement with the exact one."""
    from localnat.curate.leaderboard import kendall_tau_b

    ln_exact = np.array([r["local_nat"] for r in exact])
    ln = np.array([r["local_nat"] for r in sampled])
    se = np.array([r["local_nat_se"] for r in sampled])
    exact_means, means = teacher_means(rows, exact), teacher_means(rows, sampled)
    teachers = sorted(exact_means)
    drawn = se > 0  # rows with steps left out; the others are exact
    exact_best, best = best_per_prompt(rows, exact), best_per_prompt(rows, sampled)
    return {
        "tau_b": kendall_tau_b([exact_means[t] for t in teachers], [means[t] for t in teachers]),
        "sampled_rows": int(drawn.sum()),
        "calibration": float(np.mean(np.abs(ln_exact - ln)[drawn] <= 2 * se[drawn]))
        if drawn.any()
        else None,
        "same_selection": float(np.mean([exact_best[p] == best[p] for p in exact_best])),
    }


def race_rows(rows, sampled: list[dict], z: float) -> pd.DataFrame:
    """The racing survivors of a sampled run (row_id = the row's index)."""
    from localnat.curate.selection import race

    return race(frame(rows, sampled), z)


def racing(rows, exact, sampled, survivors: pd.DataFrame, rest: list[dict]) -> dict:
    """The racing choice (survivors settled on their exact LN: sampled steps plus the exact
    pass's `rest`, as the job does) against the exact selection; that LN must be the exact
    run's."""
    from localnat.curate.selection import settle
    from localnat.scoring.sampling import exact_ln

    todo = survivors.loc[survivors["rescore"], "row_id"].to_numpy()
    again = np.array(
        [
            exact_ln(
                np.nansum(np.array(sampled[i]["step_logprobs"], float)),
                r["rest_sum"],
                sampled[i]["n_steps"],
            )
            for i, r in zip(todo, rest)
        ]
    )
    drift = np.abs(again - np.array([exact[i]["local_nat"] for i in todo])).max(initial=0.0)
    if drift > 1e-4:
        raise SystemExit(f"rescoring is not exact: {drift:.2e} from the exact run")
    chosen = settle(survivors, pd.DataFrame({"row_id": todo, "local_nat": again}))
    exact_best = best_per_prompt(rows, exact)
    picks = dict(zip(chosen["prompt_id"], chosen["row_id"]))
    return {
        "same_selection": float(np.mean([exact_best[p] == picks[p] for p in exact_best])),
        "rescored_rows": len(todo),
        "exact_prompts": int((chosen["settled_by"] == "exact").sum()),
    }


def run(cfg, model, tok, rows: list[dict], fractions: list[float], zs=(3.0,)) -> None:
    """Score the rows exactly, then at each fraction without racing and racing at each z
    (each z its own exact pass); print a table row for each."""

    def score(config):
        scorer = Scorer(config, model=model, tokenizer=tok)
        out = scorer.score([r["prompt"] for r in rows], [r["response"] for r in rows])
        return out.to_pylist(), scorer.stats["tokens"]

    def unsampled(config, index):  # racing's exact pass: the steps the sample left out
        scorer = Scorer(config, model=model, tokenizer=tok)
        items = [scorer.prepare(rows[i]["prompt"], rows[i]["response"]) for i in index]
        return scorer.score_unsampled(items), scorer.stats["tokens"]

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
        for z in zs:
            survivors = race_rows(rows, sampled, z)
            todo = survivors.loc[survivors["rescore"], "row_id"].tolist()
            sampled_cfg = replace(cfg, sample_steps=fraction)
            rest, more = unsampled(sampled_cfg, todo) if todo else ([], 0)
            r = racing(rows, exact, sampled, survivors, rest)
            print(
                f"| {fraction:g} + racing (z={z:g}) | "
                f"{100 * (tokens + more) / exact_tokens:.0f}% | as above | "
                f"{r['rescored_rows']} rows' unsampled steps scored, {r['exact_prompts']} of "
                f"{len({row['prompt_id'] for row in rows})} prompts settled by them | "
                f"{100 * r['same_selection']:.0f}% |"
            )
