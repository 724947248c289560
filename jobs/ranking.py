"""Teacher ranking that stops, against the ranking over every prompt, in one run
(docs/benchmarks.md "Teacher ranking that stops"):

    python -m jobs.ranking --data ../shared/data/mip_gsm8k.parquet --prompts 100 \\
        --teachers 6 --max-chars 4000 --sample-steps 0.1 --seeds 5

The first `--prompts` prompts of the file with `--teachers` teachers each (long-CoT first),
responses cut to `--max-chars`, go through the job (a local Ray, the bundled student) twice
over: every prompt (the reference leaderboard), then `--rank-teachers` once per seed through
the same score cache. Prints, per seed, where the ranking stopped, its top teacher against
the reference's, and the share of the reference's model and response tokens it needed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from localnat.curate.job import run_job
from localnat.options import parse_config


def corpus(path: str, prompts: int, teachers: int, max_chars: int) -> pd.DataFrame:
    """The first `prompts` prompts answered by all of `teachers` teachers (long-CoT ones
    first, then by name), responses cut."""
    df = pq.read_table(path).to_pandas()
    kinds = df.groupby("teacher")["long_cot"].first() if "long_cot" in df else None
    names = sorted(
        df["teacher"].unique(), key=lambda t: (not kinds[t], t) if kinds is not None else t
    )
    df = df[df["teacher"].isin(names[:teachers])]
    full = df.groupby("prompt_id")["teacher"].nunique() == teachers
    keep = [p for p in df["prompt_id"].drop_duplicates() if full[p]][:prompts]
    df = df[df["prompt_id"].isin(keep)].copy()
    df["response"] = df["response"].str.slice(0, max_chars)
    return df[["prompt_id", "prompt", "teacher", "response", "is_correct"]]


def job(base: list[str], *extra) -> dict:
    return run_job(parse_config([*base, *map(str, extra)]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="../shared/data/mip_gsm8k.parquet")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--teachers", type=int, default=6)
    ap.add_argument("--max-chars", type=int, default=4000)
    ap.add_argument("--sample-steps", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rank-delta", type=float, default=0.05)
    ap.add_argument("--work", help="directory for inputs, outputs and the cache (default: temp)")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="localnat-ranking-"))
    (work / "in").mkdir(parents=True, exist_ok=True)
    df = corpus(args.data, args.prompts, args.teachers, args.max_chars)
    df.to_parquet(work / "in" / "corpus.parquet")
    base = [
        "--input",
        str(work / "in"),
        "--output",
        str(work / "out"),
        "--cache",
        str(work / "cache"),
    ]
    base += ["--sample-steps", str(args.sample_steps), "--signals", "local"]
    full = job(base, "--run-id", "every-prompt")
    board = json.loads((work / "out" / "every-prompt" / "teachers.json").read_text())
    stats = board["per_teacher"]
    order = sorted(board["ranked"], key=lambda t: stats[t]["local"]["rank"])
    tokens = pq.read_table(work / "out" / "every-prompt" / "scores").to_pandas()
    per_prompt = tokens.groupby("prompt_id")["n_response_tokens"].sum()
    print(
        f"{df['prompt_id'].nunique()} prompts x {df['teacher'].nunique()} teachers, responses <= "
        f"{args.max_chars} chars, --sample-steps {args.sample_steps} --signals local; every "
        f"prompt: {full['counts']['model_tokens']:,} model tokens, top {order[0]} "
        f"(LN {stats[order[0]]['local']['mean']:.4f} CI {stats[order[0]]['local']['ci95']}), "
        f"second {order[1]} (LN {stats[order[1]]['local']['mean']:.4f} CI "
        f"{stats[order[1]]['local']['ci95']})"
    )
    print(
        "| seed | stopped | prompts scored | share of prompts | share of response tokens | top "
        "| same top |"
    )
    print("|---|---|---|---|---|---|---|")
    for seed in range(args.seeds):
        ranked = job(
            base,
            "--run-id",
            f"rank-{seed}",
            "--rank-teachers",
            "--seed",
            seed,
            "--rank-delta",
            args.rank_delta,
        )
        r = ranked["ranking"]
        scored = pd.concat(
            pq.read_table(d / "scores").to_pandas()
            for d in sorted((work / "out" / f"rank-{seed}" / "rank").iterdir())
        )
        share = per_prompt[scored["prompt_id"].unique()].sum() / per_prompt.sum()
        print(
            f"| {seed} | {r['stopped']} | {r['prompts_scored']} | "
            f"{100 * r['prompts_scored'] / r['prompts']:.0f}% | {100 * share:.0f}% | {r['top']} | "
            f"{'yes' if r['top'] == order[0] else 'no'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
