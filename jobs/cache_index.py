"""The score cache at scale: N synthetic keys (default 10M) folded into one generation, then
the memory a reading process holds for the lookup, shared index against a private copy (the
design before: every actor read every key itself), side by side, and lookups per second.

    python -m jobs.cache_index --keys 10000000 --actors 2

Prints: compaction and index-build seconds, the index's bytes, and per actor its unique
memory (USS) added by the lookup, each way, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def synthetic(ns: Path, keys: int, seed: int = 0) -> None:
    """One part of `keys` random keys (and a score column), then a forced compaction."""
    from localnat.curate.cache.keys import KEY
    from localnat.curate.cache.namespace import keys_array
    from localnat.curate.cache.writer import declare

    rng = np.random.default_rng(seed)
    (ns / "parts").mkdir(parents=True)
    raw = rng.bytes(16 * keys)
    table = pa.table(
        {
            KEY: keys_array(np.frombuffer(raw, dtype="S16")),
            "local_nat": rng.normal(size=keys),
            "n_response_tokens": rng.integers(1, 5000, size=keys),
        }
    )
    declare(str(ns), table.schema)
    pq.write_table(table, ns / "parts" / "20260101T000000-all.parquet", row_group_size=1 << 20)


def uss_mb() -> float:
    import psutil

    return psutil.Process().memory_full_info().uss / 2**20


class Reader:
    """A reading process, as a pack task's is: its memory before and after its Lookup."""

    def __init__(self):
        import localnat.curate.cache.lookup  # noqa: F401 - modules loaded before memory is taken

    def measure(self, shared, private: bool, probes: np.ndarray) -> dict:
        import gc

        from localnat.curate.cache.lookup import Lookup, build_index
        from localnat.curate.cache.namespace import keys_array

        keys = keys_array(probes)
        gc.collect()
        before = uss_mb()
        view, ref = shared
        if private:
            lookup = Lookup(view, build_index(view), ["local_nat"])
        else:
            lookup = Lookup.open(shared, ["local_nat"])
        after = uss_mb()
        lookup.find(keys)  # the pages of a mapped index are touched once
        t = time.perf_counter()
        found, _ = lookup.find(keys)
        seconds = time.perf_counter() - t
        return {
            "uss_added_mb": after - before,
            "found": int(found.sum()),
            "lookups_s": len(keys) / seconds,
        }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=10_000_000)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--probes", type=int, default=100_000)
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from localnat.curate.cache.lookup import build_index, shared_view
    from localnat.curate.cache.namespace import view
    from localnat.curate.cache.writer import compact

    with tempfile.TemporaryDirectory() as tmp:
        ns = Path(tmp) / "v1-bench"
        t = time.time()
        synthetic(ns, args.keys)
        print(f"{args.keys:,} keys written in {time.time() - t:.1f} s")
        t = time.time()
        done = compact(str(ns), bound=0, force=True)
        print(f"compaction: {time.time() - t:.1f} s, {done['objects_after']} objects after")
        current = view(str(ns))
        t = time.time()
        index = build_index(current)
        print(
            f"index build: {time.time() - t:.1f} s, {index.nbytes / 2**20:,.0f} MiB "
            f"({index.nbytes / len(index.keys):.0f} bytes a key)"
        )
        rng = np.random.default_rng(1)
        present = index.keys[rng.integers(0, len(index.keys), args.probes // 2)]
        absent = np.frombuffer(rng.bytes(16 * (args.probes - len(present))), dtype="S16")
        probes = np.concatenate([present, absent])
        del index
        ray.init(num_cpus=max(4, args.actors + 2), include_dashboard=False, log_to_driver=False)
        shared = shared_view(current)
        ray.get(shared[1])  # built into the object store
        actor = ray.remote(num_cpus=0.5)(Reader)
        rows = []
        for private in (True, False):
            readers = [actor.remote() for _ in range(args.actors)]
            got = ray.get([r.measure.remote(shared, private, probes) for r in readers])
            for r in readers:
                ray.kill(r)
            rows.append((private, got))
        print("| lookup | actors | USS added per actor, MiB | lookups/s | found |")
        print("|---|---|---|---|---|")
        for private, got in rows:
            name = "private copy per actor (before)" if private else "shared index (object store)"
            uss = " / ".join(f"{g['uss_added_mb']:,.0f}" for g in got)
            rate = " / ".join(f"{g['lookups_s']:,.0f}" for g in got)
            print(f"| {name} | {len(got)} | {uss} | {rate} | {got[0]['found']:,} |")
        private = np.mean([g["uss_added_mb"] for g in rows[0][1]])
        shared_mb = np.mean([g["uss_added_mb"] for g in rows[1][1]])
        print(
            f"per-actor memory added: private {private:,.0f} MiB, shared {shared_mb:,.1f} MiB "
            "(the shared index lives once per node in the object store)"
        )
        ray.shutdown()


if __name__ == "__main__":
    main()
