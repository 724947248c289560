"""What the student's identity costs, and where the attention kernel belongs
(docs/method.md §10). Prints, side by side:

1. hash time of the bundled SmolLM2-135M-Instruct directory and of a 1 GB weight file: cold
   (the file's pages dropped from the page cache first), then memoized;
2. single-thread throughput of the candidate hashes (blake2b, sha256, xxhash when installed);
3. how far attention kernels and batch shapes move scores: max |difference| of LN, GN and
   the step scores between `eager` and `sdpa`, fp32 and bf16, on real traces with the real
   student, next to the difference between two batch shapes of the same kernel.

    python -m jobs.identity [--rows 8] [--skip-kernels]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path


def drop_cache(path: Path) -> None:
    """Evict a file's pages (clean ones) so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def hash_times(directory: Path, memo_root: Path) -> tuple[float, float, int]:
    """(cold s, memoized s, bytes) of hashing `directory` as the job does."""
    os.environ["LOCALNAT_CACHE"] = str(memo_root)
    from localnat.curate.run import identity

    files = [directory / n for n in identity.student_files(directory)]
    for f in files:
        drop_cache(f)
    t = time.perf_counter()
    identity.hash_dir(directory)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    identity.hash_dir(directory)
    return cold, time.perf_counter() - t, sum(f.stat().st_size for f in files)


def hash_speeds(mb: int = 256) -> dict[str, float]:
    data = os.urandom(mb << 20)
    makers = {"blake2b": hashlib.blake2b, "sha256": hashlib.sha256}
    try:
        import xxhash

        makers["xxh3_128"] = xxhash.xxh3_128
    except ImportError:
        pass
    out = {}
    for name, make in makers.items():
        h, t = make(), time.perf_counter()
        view = memoryview(data)
        for s in range(0, len(data), 8 << 20):
            h.update(view[s : s + (8 << 20)])
        out[name] = mb / (time.perf_counter() - t)
    return out


def kernel_differences(rows: int) -> list[tuple[str, float, float, float]]:
    """(comparison, max |dLN|, max |dGN|, max |d step score|) on real traces."""
    import numpy as np
    import pyarrow.parquet as pq

    from localnat import ScoreConfig, Scorer
    from localnat.testing.jobs import SAMPLE

    df = pq.read_table(SAMPLE).to_pandas().head(rows)
    prompts, responses = df["prompt"].tolist(), df["response"].str.slice(0, 2000).tolist()

    def score(dtype, kernel, batch_tokens):
        cfg = ScoreConfig(
            device="cpu", dtype=dtype, attn_implementation=kernel, batch_tokens=batch_tokens
        )
        return Scorer(cfg).score(prompts, responses).to_pandas()

    def diff(a, b):
        steps = max(
            float(np.nanmax(np.abs(np.array(x, float) - np.array(y, float))))
            for x, y in zip(a["step_logprobs"], b["step_logprobs"])
        )
        return (
            float((a["local_nat"] - b["local_nat"]).abs().max()),
            float((a["global_nat"] - b["global_nat"]).abs().max()),
            steps,
        )

    out = []
    for dtype in ("float32", "bfloat16"):
        sdpa = score(dtype, "sdpa", 2048)
        out.append((f"{dtype}: eager vs sdpa", *diff(score(dtype, "eager", 2048), sdpa)))
        out.append((f"{dtype}: sdpa, batch 256 vs 2048", *diff(score(dtype, "sdpa", 256), sdpa)))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8, help="real traces for the kernel check")
    ap.add_argument("--skip-kernels", action="store_true")
    args = ap.parse_args(argv)
    from localnat.scoring.student import default_student_dir

    student = default_student_dir()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cold, memo, size = hash_times(student, tmp / "memo1")
        print(
            f"SmolLM2-135M-Instruct dir ({size / 2**20:,.0f} MiB): cold {cold:.2f} s "
            f"({size / 2**20 / cold:,.0f} MiB/s), memoized {memo * 1000:.1f} ms"
        )
        big = tmp / "big"
        big.mkdir()
        with open(big / "model.safetensors", "wb") as f:
            for _ in range(1024):
                f.write(os.urandom(1 << 20))
        cold, memo, size = hash_times(big, tmp / "memo2")
        print(
            f"1 GiB weight file: cold {cold:.2f} s ({size / 2**20 / cold:,.0f} MiB/s), "
            f"memoized {memo * 1000:.1f} ms"
        )
    speeds = hash_speeds()
    print("one thread, in memory: " + ", ".join(f"{k} {v:,.0f} MiB/s" for k, v in speeds.items()))
    if not args.skip_kernels:
        print("| comparison | max abs dLN | max abs dGN | max abs d step score |")
        print("|---|---|---|---|")
        for name, ln, gn, step in kernel_differences(args.rows):
            print(f"| {name} | {ln:.2e} | {gn:.2e} | {step:.2e} |")


if __name__ == "__main__":
    main()
