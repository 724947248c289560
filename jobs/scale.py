"""The job at corpus scale: a full night, then nights with 1% new rows and the score cache.

    python -m jobs.scale --rows 100000 [--files 100 --actors 2 --nights 30 --verify]

Generates a synthetic corpus of N rows over about 100 Parquet files (prompts answered by
several teachers, some duplicate rows, a correctness column, short multi-sentence
responses), runs the real job (`localnat curate`, a local Ray) on it with the tiny random
student of the tests (the job's machinery, not a real model's speed), then adds 1% new rows
in new files and runs the incremental night with the same `--cache`. Prints per night: wall
seconds, rows/s, the stages' seconds (plan, score, reduce, selected/), the driver's peak RSS,
rows scored and reused. `--nights N` runs N nights (the first full, each next one with 1% of
the rows new), and prints per night the cache's objects, its compaction's seconds and the
score parts per committed chunk; it checks that each night scored exactly its new rows.
`--verify` also runs a cache-less full night of the grown corpus and checks every output
equals the last night's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TEACHERS = ["qwq-32b", "deepseek-r1", "gpt-oss-120b", "kimi-k2", "phi-4-reasoning"]
SENTENCES = [
    "Let x be the number of apples, so x + {a} = {b}.",
    "First, note that the sum is {a}.",
    "Then we subtract {a} from {b} and get {c}.",
    "Wait, let me double-check: {a} + {b} = {c}.",
    "The total cost is ${a}.00 for apples and ${b} for pears.",
    "Okay, so we need to find the value of the expression.",
    "Hmm, that gives {c}, which is close to pi times {a}.",
    "We compute $a^2 + b^2 = c^2$ with a = {a}.",
    "Therefore the answer is \\boxed{{{c}}}.",
    "Second, the product? It is {c}.",
    "So each box holds {a} items and there are {b} boxes.",
    "Yes, {c} is correct.",
]


def corpus(rows: int, files: int, seed: int, prefix: str) -> list[pa.Table]:
    """`rows` rows in `files` tables: each prompt answered by 2-5 teachers, 0.5% of the rows
    a repeat of the row before (same prompt, teacher and response)."""
    rng = np.random.default_rng(seed)
    per_prompt = rng.integers(2, 6, size=rows // 2 + 1)
    prompt_of = np.repeat(np.arange(len(per_prompt)), per_prompt)[:rows]
    teacher = np.concatenate([rng.permutation(len(TEACHERS))[:k] for k in per_prompt])[:rows]
    nums = rng.integers(1, 500, size=(rows, 3))
    n_sent = rng.integers(3, 7, size=rows)
    picks = rng.integers(0, len(SENTENCES), size=(rows, 6))
    responses = []
    for i in range(rows):
        a, b, c = nums[i]
        responses.append(
            " ".join(SENTENCES[j].format(a=a, b=b, c=c) for j in picks[i, : n_sent[i]])
        )
    dup = np.flatnonzero(rng.random(rows) < 0.005)
    dup = dup[dup > 0]
    for i in dup:  # a repeat of the row before: the duplicate report has work to do
        prompt_of[i], teacher[i], responses[i] = prompt_of[i - 1], teacher[i - 1], responses[i - 1]
    ids = [f"{prefix}{p:07d}" for p in prompt_of]
    prompts = [
        f"Problem {prefix}{p}: how many apples are left after {p % 97} are eaten?"
        for p in prompt_of
    ]
    table = pa.table(
        {
            "prompt_id": ids,
            "prompt": prompts,
            "teacher": [TEACHERS[t] for t in teacher],
            "response": responses,
            "is_correct": rng.random(rows) < 0.7,
            "difficulty": rng.integers(1, 6, size=rows),  # a passthrough column
        }
    )
    step = -(-rows // files)
    return [table.slice(f * step, step) for f in range(files) if f * step < rows]


def write(tables: list[pa.Table], out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for f, table in enumerate(tables):
        pq.write_table(table, out / f"{name}-{f:04d}.parquet")


def night(work: Path, run_id: str, student: str, args, cache: bool) -> dict:
    """One `localnat curate` run in a subprocess; its manifest plus the wall time."""
    flags = ["--input", str(work / "in"), "--output", str(work / "out"), "--run-id", run_id]
    flags += ["--student", student, "--actors", str(args.actors), "--overwrite"]
    flags += ["--correct-column", "is_correct", "--call-tokens", str(args.call_tokens)]
    flags += ["--commit-rows", str(args.commit_rows)]
    if cache:
        flags += ["--cache", str(work / "cache")]
    cmd = [
        sys.executable,
        "-c",
        "import sys; from localnat.cli import main; sys.exit(main(['curate', *sys.argv[1:]]))",
        *flags,
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode:
        print(proc.stdout[-4000:], proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{run_id}: exit {proc.returncode}")
    manifest = json.loads((work / "out" / run_id / "manifest.json").read_text())
    return {"wall": wall, **manifest}


HEADER = (
    "| night | rows | wall s | rows/s | plan s | score s | reduce s | selected/ s | compact s "
    "| driver peak RSS MB | scored | reused | rejected | cache objects | scores/ parts / chunks |"
)


def line(name: str, rows: int, m: dict, work: Path) -> str:
    t, c = m["timings_s"], m["counts"]
    run = work / "out" / m["run_id"]
    chunks = len(list((run / "_done").glob("*.json")))
    parts = len(list((run / "scores").glob("*.parquet")))
    objects = sum(1 for p in (work / "cache").rglob("*") if p.is_file())
    return (
        f"| {name} | {rows:,} | {m['wall']:.0f} | {rows / m['wall']:,.0f} | "
        f"{t.get('plan', 0):.1f} | {t.get('score', 0):.0f} | {t.get('reduce', 0):.1f} | "
        f"{t.get('select', 0):.1f} | {t.get('compact', 0):.1f} | "
        f"{m['driver_peak_rss_mb']:,.0f} | "
        f"{c.get('cache_misses', c['scored']):,} | {c.get('cache_hits', 0):,} | "
        f"{c['rejected']:,} | {objects:,} | {parts:,} / {chunks:,} |"
    )


def same_outputs(a: Path, b: Path, atol: float = 1e-6) -> list[str]:
    """Names of the outputs that differ between two runs (row order aside). Scores may differ
    by float reduction order (docs/method.md §9): a duplicate row takes its first copy's
    cached score, while a rescore computes each copy in its own batch (about 1e-8 apart)."""
    differ = []
    for name in ("scores", "rejects", "selected"):
        frames = [
            pq.read_table(d / name).to_pandas() if (d / name).exists() else None for d in (a, b)
        ]
        if frames[0] is None or frames[1] is None:
            if (frames[0] is None) != (frames[1] is None):
                differ.append(name)
            continue
        x, y = (f.sort_values("row_id").reset_index(drop=True) for f in frames)
        if sorted(x.columns) != sorted(y.columns) or len(x) != len(y):
            differ.append(name)
            continue
        if any(not close(x[c].tolist(), y[c].tolist(), atol) for c in x.columns):
            differ.append(name)
    board = [json.loads((d / "teachers.json").read_text()) for d in (a, b)]
    if not close(board[0], board[1], atol):
        differ.append("teachers.json")
    return differ


def close(x, y, atol: float) -> bool:
    """Equal, floats within `atol`, through lists, arrays and dicts."""
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(close(x[k], y[k], atol) for k in x)
    if isinstance(x, (list, tuple, np.ndarray)) and isinstance(y, (list, tuple, np.ndarray)):
        return len(x) == len(y) and all(close(u, v, atol) for u, v in zip(x, y))
    if isinstance(x, float) and isinstance(y, float):
        return (x != x and y != y) or abs(x - y) <= atol
    return x == y


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--files", type=int, default=100)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument(
        "--call-tokens",
        type=int,
        default=200_000,
        help="about a second of the tiny student per call",
    )
    p.add_argument("--commit-rows", type=int, default=1000)
    p.add_argument("--new", type=float, default=0.01, help="share of new rows a night")
    p.add_argument("--nights", type=int, default=2, help="the first full, then new rows")
    p.add_argument("--verify", action="store_true", help="also a cache-less full night")
    p.add_argument("--workdir", help="default: a temporary directory (deleted after)")
    args = p.parse_args(argv)

    from localnat.testing import save_tiny_student

    work = Path(args.workdir or tempfile.mkdtemp(prefix="scale-"))
    t = time.time()
    write(corpus(args.rows, args.files, 0, "p"), work / "in", "night1")
    new = max(1, int(args.rows * args.new))
    student = save_tiny_student(work / "student")
    print(
        f"corpus: {args.rows:,} rows in {args.files} files ({time.time() - t:.0f} s to make);"
        f" {args.actors} actors, tiny random student, call-tokens {args.call_tokens:,}"
    )
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    rows, walls = args.rows, []
    for n in range(1, max(2, args.nights) + 1):
        if n > 1:  # the night's new rows, in new files
            write(corpus(new, max(1, args.files // 100), n, f"n{n}-"), work / "in", f"night{n}")
        m = night(work, f"night{n}", student, args, cache=True)
        rows += 0 if n == 1 else new
        walls.append(m["wall"])
        print(line("full" if n == 1 else f"{n}: +{args.new:.0%} new", rows, m, work), flush=True)
        misses = m["counts"].get("cache_misses")
        if n > 1 and misses != new:
            raise SystemExit(f"night {n} scored {misses} rows, not its {new} new ones")
    if len(walls) > 2:
        print(f"last night / night 2 wall: {walls[-1] / walls[1]:.2f}")
    print(f"night 2 / full wall: {walls[1] / walls[0]:.3f}")
    if args.verify:
        rescore = night(work, "rescore", student, args, cache=False)
        print(line("full rescore, no cache", rows, rescore, work))
        differ = same_outputs(work / "out" / f"night{len(walls)}", work / "out" / "rescore")
        print("outputs equal a full rescore" if not differ else f"outputs DIFFER: {differ}")
        if differ:
            return 1
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
