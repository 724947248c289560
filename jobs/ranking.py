"""Teacher ranking that stops, against the ranking over every prompt, in one run
(docs/benchmarks.md "Teacher ranking that stops"):

    python -m jobs.ranking --data ../shared/data/mip_gsm8k.parquet --prompts 100 \\
        --teachers 6 --max-chars 1200 --sample-steps 0.1 --seeds 5

The first `--prompts` prompts of the file with `--teachers` teachers each (long-CoT first),
responses cut to `--max-chars`, scored once in this process by the bundled student with
`--sample-steps` and `--signals` (default `local`; the job's blocks score a row as its scores pass
does: tests/e2e/test_ranking_job.py). The leaderboard over every prompt is the reference;
then, per seed, the job's own stopping loop (`ranking.rank_until_separated`) over the
same scores: where it stopped, its top teacher against the reference's, and the share of
the prompts and of the response tokens it needed.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from localnat import ScoreConfig, Scorer
from localnat.curate.choose.leaderboard import leaderboard
from localnat.curate.choose.ranking import rank_until_separated
from localnat.curate.choose.reduce import Reduced
from localnat.curate.job_config import CurateConfig

from .sampling import frame


def corpus(path: str, prompts: int, teachers: int, max_chars: int) -> pd.DataFrame:
    """The first `prompts` prompts answered by all of `teachers` teachers (long-CoT ones
    first, then by name), responses cut."""
    df = pq.read_table(path).to_pandas()
    long = df.groupby("teacher")["long_cot"].first() if "long_cot" in df else None
    names = sorted(df["teacher"].unique(), key=lambda t: (long is not None and not long[t], t))
    df = df[df["teacher"].isin(names[:teachers])]
    full = df.groupby("prompt_id")["teacher"].nunique() == teachers
    keep = [p for p in df["prompt_id"].drop_duplicates() if full[p]][:prompts]
    df = df[df["prompt_id"].isin(keep)].reset_index(drop=True)
    df["response"] = df["response"].str.slice(0, max_chars)
    return df


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="../shared/data/mip_gsm8k.parquet")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--teachers", type=int, default=6)
    ap.add_argument("--max-chars", type=int, default=1200)
    ap.add_argument("--sample-steps", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument(
        "--signals",
        default="local",
        help="the signals scored, comma-separated; `all`: every one (the global pass runs "
        "whole and steadies the sampled LN: docs/method.md §5.2)",
    )
    ap.add_argument("--rank-delta", type=float, default=0.05)
    args = ap.parse_args(argv)
    df = corpus(args.data, args.prompts, args.teachers, args.max_chars)
    rows = df.to_dict("records")
    signals = {} if args.signals == "all" else {"signals": (args.signals,)}
    cfg = ScoreConfig(sample_steps=args.sample_steps, device="cpu", **signals)
    scorer = Scorer(cfg)
    scored = scorer.score(df["prompt"].tolist(), df["response"].tolist()).to_pylist()
    table = frame(rows, scored)
    table["prompt_id"] = table["prompt_id"].astype(str)
    full = leaderboard(table, signals=cfg.signals)
    order = sorted(full["ranked"], key=lambda t: full["per_teacher"][t]["local"]["rank"])
    print(
        f"{df['prompt_id'].nunique()} prompts x {df['teacher'].nunique()} teachers, responses "
        f"<= {args.max_chars} chars, {table['n_response_tokens'].sum():,} response tokens, "
        f"--sample-steps {args.sample_steps} --signals {args.signals}: "
        f"{scorer.stats['tokens']:,} model "
        "tokens; every prompt's LN ranking: "
        + ", ".join(
            f"{t} {full['per_teacher'][t]['local']['mean']:.4f} "
            f"{np.round(full['per_teacher'][t]['local']['ci95'], 4).tolist()}"
            for t in order
        )
    )
    ids = pd.DataFrame(
        {"file_index": 0, "row_number": range(len(table)), "prompt_id": table["prompt_id"]}
    )
    tokens = table.groupby("prompt_id")["n_response_tokens"].sum()
    print(
        "| seed | stopped | prompts scored | share of prompts | share of response tokens "
        "| top | same top as every prompt's |"
    )
    print("|---|---|---|---|---|---|---|")
    for seed in range(args.seeds):
        job = CurateConfig(rank_teachers=True, seed=seed, rank_delta=args.rank_delta, score=cfg)
        taken: list[str] = []

        def upto(b, block, taken=taken, job=job):
            taken.extend(block)
            part = table[table["prompt_id"].isin(taken)]
            board = leaderboard(
                part, seed=job.seed, signals=cfg.signals, min_share=job.min_matched_share
            )
            return Reduced(part, part.iloc[:0], board)

        _, r = rank_until_separated(ids, job.choosing, upto)
        share = tokens[taken].sum() / tokens.sum()
        print(
            f"| {seed} | {r['stopped']} | {r['prompts_scored']} | "
            f"{100 * r['prompts_scored'] / r['prompts']:.0f}% | {100 * share:.0f}% | {r['top']} | "
            f"{'yes' if r['top'] == order[0] else 'no'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
