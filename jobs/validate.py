"""Which signal to trust, on real data: the curation job (the real student, the real
corpus's correctness column) on a slice of a shared data set, then its validation table
(docs/method.md §7.1) and the Kendall tau between the signals' teacher rankings.

    python -m jobs.validate --data ../shared/data/mip_gsm8k.parquet --prompts 50 \\
        [--sample-steps 0.1] [--one-sample] [--out DIR]

The slice: the prompts with both correct and incorrect answers first (the informative ones:
only they tell signals apart), then the others, in file order, `--prompts` of them with every
answer. `--one-sample` keeps each teacher's first sample of a prompt.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def slice_rows(path: str, prompts: int, one_sample: bool) -> pd.DataFrame:
    df = pq.read_table(path).to_pandas()
    df = df[df["response"].notna() & (df["response"].str.strip() != "")]
    if one_sample and "sample_index" in df:
        df = df.sort_values("sample_index").drop_duplicates(["prompt_id", "teacher"])
    mixed = df.groupby("prompt_id")["is_correct"].agg(lambda s: s.dropna().nunique() == 2)
    order = list(dict.fromkeys(df["prompt_id"]))
    chosen = [p for p in order if mixed[p]][:prompts]
    chosen += [p for p in order if not mixed[p]][: prompts - len(chosen)]
    keep = ["prompt_id", "prompt", "teacher", "response", "is_correct"]
    return df[df["prompt_id"].isin(chosen)][keep].reset_index(drop=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--sample-steps", type=float)
    ap.add_argument("--one-sample", action="store_true")
    ap.add_argument("--select-by", default="local")
    ap.add_argument("--dtype", default="auto", help="bfloat16 halves a CPU's time")
    ap.add_argument("--out", help="keep the run here (default: a temporary directory)")
    args = ap.parse_args(argv)

    from localnat.curate.job import run_job
    from localnat.options import parse_config

    df = slice_rows(args.data, args.prompts, args.one_sample)
    work = Path(args.out or tempfile.mkdtemp(prefix="validate-"))
    (work / "in").mkdir(parents=True, exist_ok=True)
    df["is_correct"] = df["is_correct"].astype("boolean")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), work / "in" / "rows.parquet")
    flags = ["--input", str(work / "in"), "--output", str(work / "out"), "--run-id", "v"]
    flags += ["--correct-column", "is_correct", "--select-by", args.select_by, "--overwrite"]
    flags += ["--dtype", args.dtype]
    if args.sample_steps:  # every prompt settled at once: validation needs no racing round
        flags += ["--sample-steps", str(args.sample_steps), "--race-epsilon", "1000"]
    start = time.time()
    manifest = run_job(parse_config(flags))
    board = json.loads((work / "out" / "v" / "teachers.json").read_text())
    v = board["validation"]
    print(
        f"{Path(args.data).name}: {df.prompt_id.nunique()} prompts, {df.teacher.nunique()} "
        f"teachers, {len(df)} rows ({manifest['counts']['scored']} scored), "
        f"{time.time() - start:,.0f} s; sample-steps {args.sample_steps or 'off (exact)'}, "
        f"dtype {args.dtype}"
    )
    print(
        f"informative prompts {v['informative_prompts']} ({v['candidates']} candidates), "
        f"random top-1 accuracy {v['random_top1_accuracy']:.2f}"
    )
    print("| signal | AUC (95% CI) | top-1 accuracy | Spearman with length | tau vs accuracy |")
    print("|---|---|---|---|---|")
    for key, s in v["signals"].items():
        lo, hi = s["auc_ci95"]
        print(
            f"| {key} | {_f(s['auc'])} ({_f(lo)}, {_f(hi)}) | {_f(s['top1_accuracy'])} | "
            f"{_f(s['length_spearman'])} | {_f(s['teacher_tau_vs_accuracy'])} |"
        )
    from localnat.curate.choose.validation import verdict

    for line in verdict(v, args.select_by):
        print(line)
    print("Kendall tau-b between the signals' teacher rankings:")
    for pair in board["rank_correlation"]:
        print(f"  {pair['a']} ~ {pair['b']}: {_f(pair['kendall_tau_b'])}")
    same = [t for t in board["teachers"] if board["per_teacher"][t]["same_family_as_student"]]
    print(f"same family as the student ({board.get('student_family')}): {same or 'none'}")


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    main()
