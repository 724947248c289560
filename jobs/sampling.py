"""Step sampling against exact scoring on the same rows (`python -m jobs.benchmark --sampling`).

Per fraction F: model tokens relative to exact, Kendall tau-b between the teacher rankings
(teacher score: mean over prompts of its mean LN per prompt, docs/method.md §7), calibration
(share of sampled rows whose exact LN lies within 2 se of the estimate) and the share of
prompts whose best-LN response is the exact one's; each with every signal and with
`--signals local`. Then racing to epsilon (docs/method.md §5.2), the job's rounds scored in
this process: the model tokens of the sample and every round against the exact run's, the
share of prompts whose pick is within epsilon of the best exact LN, and the share with the
exact run's very pick. Unlike the GPU check it needs the full install (scipy, pandas).
"""

from __future__ import annotations

import math
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
    from localnat.curate.signals import REDUCE_COLUMNS

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
    from localnat.curate.choose.leaderboard import leaderboard

    board = leaderboard(frame(rows, scored), n_boot=1, min_share=0.0)
    return {t: board["per_teacher"][t]["local"]["mean"] for t in board["teachers"]}


def best_per_prompt(rows: list[dict], scored: list[dict]) -> dict[str, int]:
    """Per prompt the row `select` keeps by LN (ties: the smallest row_id, the first)."""
    from localnat.curate.choose.selection import select

    chosen = select(frame(rows, scored), "local")
    return dict(zip(chosen["prompt_id"], chosen["row_id"]))


def compare(rows, exact: list[dict], sampled: list[dict]) -> dict:
    """The sampled run's agreement with the exact one."""
    from localnat.curate.choose.leaderboard import kendall_tau_b

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


def raced(rows, exact, sampled, scorer, epsilon: float, delta: float) -> dict:
    """Racing to `epsilon` from the sampled run, its rounds scored by `scorer` in this
    process (the job's loop): the share of prompts whose pick is within epsilon of the best
    exact LN, the share with the very pick of the exact run, the rows advanced per round and
    the rounds' model tokens."""
    from localnat.curate.choose.racing import in_process
    from localnat.curate.choose.selection import race, race_pick, race_rounds

    items = [scorer.prepare(r["prompt"], r["response"]) for r in rows]
    before = scorer.stats["tokens"]
    advance = in_process(scorer, items, sampled)
    fraction = scorer.cfg.sample_steps
    looked, _, per_round = race(
        frame(rows, sampled), epsilon, delta, race_rounds(fraction), advance
    )
    picks = dict(zip(*race_pick(looked)[["prompt_id", "row_id"]].to_numpy().T))
    ln = np.array([r["local_nat"] for r in exact])
    best = {p: ln[[i for i, r in enumerate(rows) if r["prompt_id"] == p]].max() for p in picks}
    exact_best = best_per_prompt(rows, exact)
    return {
        "within": float(np.mean([ln[picks[p]] >= best[p] - epsilon - 1e-9 for p in picks])),
        "same": float(np.mean([exact_best[p] == picks[p] for p in picks])),
        "per_round": per_round,
        "tokens": scorer.stats["tokens"] - before,
    }


def oracle_raced(rows, exact, scorer, epsilon: float, delta: float) -> dict:
    """What racing could cost at best with this sample design (the scorer's fraction, its
    control when it has one): the race run with every row's estimate at its exact LN and its
    true standard error (the stratified formula with each stratum's variance over all its
    steps, from the exact run's step scores) under the normal quantile at racing's level; each
    row then scores the sample of the last round it reached, once (a real race re-reads its
    rounds' contexts). Its model tokens and the exact run's are counted alike from the plans
    (`plan_row`, `restrict`): the prompt, the windows' segments, the global pass. A lower
    bound on racing's share of the tokens: a real race also pays for its estimates' error and
    their estimated variance."""
    from localnat.curate.choose.selection import race, race_rounds
    from localnat.scoring.api import plan_row
    from localnat.scoring.sampling import control, row_seed, sample_steps
    from localnat.scoring.windows import census, restrict

    cfg, fraction = scorer.cfg, scorer.cfg.sample_steps
    items = [scorer.prepare(r["prompt"], r["response"]) for r in rows]
    plans = [plan_row(item, replace(cfg, sample_steps=None))[0] for item in items]
    reached = {}

    def look(i: int, t: int) -> tuple[float, float, float]:
        item, row = items[i], exact[i]
        steps = census(plans[i], 0)
        seed = row_seed(item.prompt_ids.tobytes(), item.response_ids.tobytes())
        sample = sample_steps(steps, fraction, seed, t)
        base = row["step_global_logprobs"] if cfg.needs("global") else None
        residual = np.array(row["step_logprobs"], float) - control(base, len(steps))
        var = 0.0
        for stratum in sample.strata:
            size, n = len(stratum), int(sample.scored[stratum].sum())
            if n < size:
                var += size**2 * (1 - n / size) * float(residual[stratum].var(ddof=1)) / n
        reached[i] = sample.scored
        return row["local_nat"], math.sqrt(var) / len(steps), math.inf

    df = frame(rows, exact)
    first = [look(i, 0) for i in range(len(rows))]
    df["local_nat_se"], df["local_nat_df"] = [e[1] for e in first], [e[2] for e in first]

    def advance(t, todo):
        return {i: look(i, t) for i in todo["row_id"]}

    _, _, per_round = race(df, epsilon, delta, race_rounds(fraction), advance)

    def cost(i: int, keep, whole: bool) -> int:
        plan = plans[i] if keep is None else restrict(plans[i], [keep] * len(cfg.windows))
        return len(items[i].prompt_ids) + replace(plan, global_pass=whole).tokens

    spent = sum(cost(i, reached[i], cfg.needs("global")) for i in range(len(rows)))
    exact_cost = sum(cost(i, None, True) for i in range(len(rows)))  # every signal, exact
    return {"per_round": per_round, "share": spent / exact_cost}


def control_spread(exact: list[dict]) -> str:
    """How far the global pass's step means (step sampling's control, docs/method.md §5.2)
    track the windows' step scores on these rows: the median over rows of their correlation
    and of the variance of the difference against the step scores' own."""
    corr, ratio = [], []
    for row in exact:
        local = np.array(row["step_logprobs"], float)
        glob = np.array(row["step_global_logprobs"], float)  # None -> NaN
        if len(local) > 2 and np.isfinite(glob).all() and local.var() > 0:
            corr.append(np.corrcoef(local, glob)[0, 1])
            ratio.append((local - glob).var() / local.var())
    return (
        f"control: step scores and global step means correlate at {np.median(corr):.2f} "
        f"(median over {len(corr)} rows); the difference keeps {np.median(ratio):.2f} of "
        "the step scores' variance"
    )


def run(
    cfg, model, tok, rows: list[dict], fractions, epsilons=(0.02,), delta=0.01, local_exact=True
) -> None:
    """Score the rows exactly (every signal, and LN alone unless not `local_exact`), then at
    each fraction without racing and racing to each epsilon; print a table row for each,
    model tokens against the exact run's."""

    def score(config):
        scorer = Scorer(config, model=model, tokenizer=tok)
        out = scorer.score([r["prompt"] for r in rows], [r["response"] for r in rows])
        return out.to_pylist(), scorer.stats["tokens"], scorer

    exact, exact_tokens, _ = score(cfg)
    said = (
        f"{len(rows)} rows, {len({r['prompt_id'] for r in rows})} prompts, "
        f"{len({r['teacher'] for r in rows})} teachers; exact: {exact_tokens:,} model tokens"
    )
    if local_exact:
        local, local_tokens, _ = score(replace(cfg, signals=("local",)))
        same = sum(a["local_nat"] == b["local_nat"] for a, b in zip(exact, local))
        drift = max(abs(a["local_nat"] - b["local_nat"]) for a, b in zip(exact, local))
        said += (
            f"; --signals local: {local_tokens:,} ({100 * local_tokens / exact_tokens:.0f}%), "
            f"LN bit-identical to every signal's on {same} of {len(rows)} rows (largest "
            f"difference {drift:.1e})"
        )
    print(said, flush=True)
    print(control_spread(exact), flush=True)
    print(
        "| F | signals | model tokens vs exact | tau-b vs exact | calibration (2 se) | "
        "pick within epsilon | same pick |"
    )
    print("|---|---|---|---|---|---|---|")
    for fraction in fractions:
        for signals in (cfg.signals, ("local",)):
            sampled, tokens, scorer = score(replace(cfg, sample_steps=fraction, signals=signals))
            c = compare(rows, exact, sampled)
            calibration = "n/a" if c["calibration"] is None else f"{100 * c['calibration']:.0f}%"
            names = "all" if signals == cfg.signals else ",".join(signals)
            print(
                f"| {fraction:g} | {names} | {100 * tokens / exact_tokens:.0f}% | "
                f"{c['tau_b']:.3f} | {calibration} of {c['sampled_rows']} sampled rows | | "
                f"{100 * c['same_selection']:.0f}% |",
                flush=True,
            )
            for epsilon in epsilons:
                r = raced(rows, exact, sampled, scorer, epsilon, delta)
                print(
                    f"| {fraction:g} + racing (E={epsilon:g}, D={delta:g}) | {names} | "
                    f"{100 * (tokens + r['tokens']) / exact_tokens:.0f}% | | rows per round "
                    f"{r['per_round']} | {100 * r['within']:.0f}% | {100 * r['same']:.0f}% |",
                    flush=True,
                )
                o = oracle_raced(rows, exact, scorer, epsilon, delta)
                print(
                    f"| {fraction:g} + racing, at best (known variances) | {names} | "
                    f"{100 * o['share']:.0f}% | | rows per round {o['per_round']} | | |",
                    flush=True,
                )
