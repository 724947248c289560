"""What a node lost mid-run costs: the same night on a 3-node Ray cluster on this machine
(`localnat.testing.cluster`: a head that schedules nothing, two workers with one scoring
actor each), once clean and once with a worker killed without grace when a third of the
chunks are committed and a fresh node joining at once. Each night is a driver of its own
(`python -m jobs.curate`), on a new cluster; the bundled student, real MATH answers.

    python -m jobs.node_loss [--rows 40] [--chars 1200] [--student S]

Prints each night's wall time (driver start to exit), scoring time and chunks, the lost
night's ratio to the clean one, and the largest LN difference between them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from localnat.testing.cluster import Nodes
from localnat.testing.jobs import driver, sample, shards, wait_for

ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def night(d: Path, name: str, flags: list[str], lose: bool, chunks: int) -> dict:
    nodes = Nodes(d / "home")
    try:
        started = time.time()
        args = [*flags, "--output", str(d / "out"), "--run-id", name]
        proc = driver([*args, "--ray-address", nodes.address], ENV, quiet=True)
        done = d / "out" / name / "_done"
        lost_at = None
        if lose:
            third = lambda: done.exists() and len(list(done.glob("*.json"))) >= chunks / 3  # noqa: E731
            wait_for(lambda: third() or proc.poll() is not None, 1800)
            lost_at = time.time() - started
            nodes.kill(nodes.workers[0])
            nodes.workers.append(nodes.add())
        assert proc.wait(timeout=3600) == 0, f"{name}: the driver failed"
        wall = time.time() - started
    finally:
        nodes.close()
    manifest = json.loads((d / "out" / name / "manifest.json").read_text())
    scores = pd.read_parquet(d / "out" / name / "scores").set_index("row_id")["local_nat"]
    return {"wall": wall, "manifest": manifest, "scores": scores, "lost_at": lost_at}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=40)
    p.add_argument("--chars", type=int, default=1200)
    p.add_argument("--student", default=None, help="default: the bundled SmolLM2-135M")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="node-loss-") as tmp:
        d = Path(tmp)
        df = sample(a.chars)
        df = pd.concat([df] * -(-a.rows // len(df)), ignore_index=True).head(a.rows)
        df["prompt_id"] = [f"{p}-{i}" for i, p in enumerate(df["prompt_id"])]  # distinct rows
        per_file = -(-a.rows // 4)
        shards(d / "in", df, per_file)
        commit = 2
        chunks = 4 * -(-per_file // commit)
        flags = ["--input", str(d / "in"), "--actors", "2", "--cpus-per-actor", "2"]
        flags += ["--commit-rows", str(commit), "--call-tokens", "2000"]
        flags += ["--student", a.student] if a.student else []
        clean = night(d, "clean", flags, False, chunks)
        lost = night(d, "lost", flags, True, chunks)
    diff = (clean["scores"] - lost["scores"].loc[clean["scores"].index]).abs().max()
    print(f"{a.rows} rows ({a.chars} chars) in 4 files, {chunks} chunks; 3 nodes, 2 actors")
    print(f"{'night':8} {'wall s':>8} {'score s':>8} {'rows':>6}  node lost at")
    for name, r in (("clean", clean), ("lost", lost)):
        m = r["manifest"]
        at = f"{r['lost_at']:.1f} s" if r["lost_at"] else "-"
        print(
            f"{name:8} {r['wall']:8.1f} {m['timings_s']['score']:8.1f} "
            f"{m['counts']['scored']:>6}  {at}"
        )
    print(f"lost / clean wall: {lost['wall'] / clean['wall']:.2f}x; max |LN diff| {diff:.2e}")


if __name__ == "__main__":
    main()
