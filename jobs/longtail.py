"""A long-tailed corpus, run through the real job: what a night with a few huge traces costs.

    python -m jobs.longtail [--short 600 --files 6 --long 3 --long-chars 60000 --actors 2]

Builds a corpus from the shared data (GSM8K answers of several teachers, sharded, plus a few
very long real traces: MATH long-CoT answers joined), runs `localnat curate` on it with the
tiny random student (speed of the job's machinery, not of a real model), and prints the wall
time, rows/s, the largest call, and when the files committed. `--pythonpath DIR` runs another
checkout's code on the same corpus (`--legacy` for the options of versions before
--call-tokens), for before/after comparisons.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def build_corpus(out: Path, short: int, files: int, long: int, long_chars: int) -> int:
    gsm = pq.read_table(DATA / "mip_gsm8k.parquet").to_pandas()
    cols = ["prompt_id", "prompt", "teacher", "response", "is_correct"]
    gsm = gsm[cols].head(short)
    math = pq.read_table(DATA / "mip_math.parquet").to_pandas()
    math = math[math.long_cot.astype(bool)].sort_values("prompt_id")
    text = "\n\n".join(math.response)
    longs = pd.DataFrame(
        [
            {
                "prompt_id": f"long-{i}",
                "prompt": math.prompt.iloc[i],
                "teacher": "long-teacher",
                "response": text[i * long_chars : (i + 1) * long_chars],
                "is_correct": True,
            }
            for i in range(long)
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    step = -(-len(gsm) // files)
    for f in range(files):
        part = gsm.iloc[f * step : (f + 1) * step]
        if f == 0:  # the long traces sit in the first file, among short rows
            part = pd.concat([longs, part], ignore_index=True)
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), out / f"f{f:02d}.parquet")
    return len(gsm) + long


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", type=int, default=600)
    p.add_argument("--files", type=int, default=6)
    p.add_argument("--long", type=int, default=3)
    p.add_argument("--long-chars", type=int, default=60_000)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--pythonpath", help="run the code of another checkout")
    p.add_argument("--legacy", action="store_true", help="options of versions before 0.2")
    p.add_argument("--workdir", help="default: a temporary directory")
    args = p.parse_args(argv)

    from localnat.testing import save_tiny_student

    work = Path(args.workdir or tempfile.mkdtemp(prefix="longtail-"))
    rows = build_corpus(work / "in", args.short, args.files, args.long, args.long_chars)
    student = save_tiny_student(work / "student")
    flags = ["--input", str(work / "in"), "--output", str(work / "out"), "--run-id", "lt"]
    flags += ["--student", student, "--actors", str(args.actors), "--overwrite"]
    flags += ["--correct-column", "is_correct"]
    if not args.legacy:
        flags += ["--no-progress-timeout", "0"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    cmd = [
        sys.executable,
        "-c",
        "import sys; from localnat.cli import main; sys.exit(main(['curate', *sys.argv[1:]]))",
        *flags,
    ]
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    run = work / "out" / "lt"
    manifest = json.loads((run / "manifest.json").read_text())
    marks = sorted(f.stat().st_mtime - start for f in (run / "_done").iterdir())
    longest = max(m.get("response_tokens", 0) for m in manifest.get("most_expensive_rows", [{}]))
    print(
        f"corpus: {rows} rows in {args.files} files, {args.long} long traces of "
        f"{args.long_chars:,} characters; {args.actors} actors; tiny random student"
    )
    print(f"wall {wall:.1f} s, {rows / wall:.2f} rows/s, counts {manifest['counts']}")
    print(
        f"markers: {len(marks)}, first at {marks[0]:.1f} s, median {marks[len(marks) // 2]:.1f} s,"
        f" last {marks[-1]:.1f} s"
    )
    if "calls" in manifest:
        print(f"calls: {manifest['calls']}; longest response {longest:,} tokens")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
