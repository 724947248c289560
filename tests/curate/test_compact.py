"""Compaction of a score cache namespace: never a row lost, changed or doubled; a reader
during it keeps what it reads; killed anywhere, the cache stays whole."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from localnat.curate import cache
from localnat.curate.cache import KEY, keys_array, view
from localnat.curate.compact import compact, reading
from localnat.curate.lookup import Lookup, build_index
from localnat.curate.storage import list_files

COLUMNS = ["local_nat", "n_response_tokens", "step_logprobs"]


def write_parts(ns: Path, first: int, n_parts: int, rows: int, seed: int) -> dict:
    """Parts of `rows` rows each, named in time order after every existing one; keys
    0..(first + n_parts*rows) with one repeat per part of a key an earlier part holds.
    Returns key -> values of the rows written (the earliest copy of a repeated key)."""
    rng = np.random.default_rng(seed)
    (ns / "parts").mkdir(parents=True, exist_ok=True)
    (ns / "settings.json").write_text("{}")
    written = {}
    start = len(list((ns / "parts").iterdir()))
    for p in range(n_parts):
        ids = list(range(first + p * rows, first + (p + 1) * rows))
        if first + p * rows > 0:
            ids[0] = int(rng.integers(0, first + p * rows))  # a key held before
        keys = [i.to_bytes(16, "big") for i in ids]
        values = {
            "local_nat": rng.normal(size=rows).tolist(),
            "n_response_tokens": rng.integers(1, 500, size=rows).tolist(),
            "step_logprobs": [rng.normal(size=3).tolist() for _ in range(rows)],
        }
        table = pa.table({KEY: pa.array(keys, pa.binary(16)), **values})
        pq.write_table(table, ns / "parts" / f"20260101T{start + p:06d}-p.parquet")
        for i, key in enumerate(keys):
            written.setdefault(key, tuple(values[c][i] for c in ("local_nat", "n_response_tokens")))
    return written


def contents(ns: Path, current=None) -> dict:
    """key -> (local_nat, n_response_tokens) as a reader sees the cache: every key once."""
    current = current or view(str(ns))
    index = build_index(current)
    lookup = Lookup(current, index, COLUMNS)
    out = {}
    for where in range(len(index.keys)):
        source, row = int(index.source[where]), int(index.row[where])
        size = lookup.row_group or 1
        in_file = source < lookup.n_files
        block = lookup._block(source, row // size if in_file else 0)
        got = block.slice(row % size if in_file else row, 1).to_pylist()[0]
        out[index.keys[where].ljust(16, b"\0")] = (got["local_nat"], got["n_response_tokens"])
    assert len(out) == len(index.keys) == len(set(index.keys.tolist()))
    return out


def test_compaction_folds_parts_keeping_every_row_once(tmp_path):
    ns = tmp_path / "v1-x"
    expected = write_parts(ns, 0, 30, 20, seed=1)
    assert contents(ns) == expected
    done = compact(str(ns), bound=10)
    assert done["generation"] == 1 and done["parts_before"] == 30
    assert contents(ns) == expected
    assert not list((ns / "parts").iterdir())  # absorbed, then deleted
    for night in range(2, 8):  # a week of nights: each adds parts, each night's end folds
        expected = {**write_parts(ns, night * 1000, 12, 20, seed=night), **expected}
        assert contents(ns) == expected  # before the fold: the generation and the new parts
        assert compact(str(ns), bound=10)["generation"] == night
        assert contents(ns) == expected
        objects = list_files(str(ns))
        assert len(objects) <= 8, objects  # settings, a commit, an index, a few data files
    # fewer parts than the bound: nothing folded
    expected = {**write_parts(ns, 90_000, 3, 5, seed=99), **expected}
    assert "generation" not in compact(str(ns), bound=10)
    assert contents(ns) == expected


def test_a_reader_keeps_what_it_reads_while_a_compaction_commits(tmp_path):
    ns = tmp_path / "v1-x"
    expected = write_parts(ns, 0, 12, 10, seed=2)
    compact(str(ns), bound=0)
    expected = {**write_parts(ns, 5000, 12, 10, seed=3), **expected}
    with reading(str(ns)):
        before = view(str(ns))  # generation 1 and 12 parts
        done = compact(str(ns), bound=0)
        assert done["generation"] == 2 and done["collected"] == 0  # a reader: nothing deleted
        assert contents(ns, before) == expected  # its old view still reads every row
        assert contents(ns) == expected  # and a new reader sees the new generation
    assert compact(str(ns), bound=0)["collected"] > 0  # no reader: collected now
    assert contents(ns) == expected and not list((ns / "parts").iterdir())


def test_killed_anywhere_the_cache_stays_whole(tmp_path):
    ns = tmp_path / "v1-x"
    expected = write_parts(ns, 0, 200, 50, seed=4)
    compact(str(ns), bound=0)
    expected = {**write_parts(ns, 100_000, 200, 50, seed=5), **expected}
    command = [sys.executable, "-m", "localnat.cli", "cache", "compact", str(ns), "--force"]
    for delay in (0.5, 1.0, 1.5, 2.0, 3.0):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert contents(ns) == expected, delay  # whatever it had done: every row, once
        expected = {**write_parts(ns, 200_000 + int(delay * 10_000), 20, 50, seed=6), **expected}
    # the killed compactions' leases are dead (their process is gone): the next one runs
    done = compact(str(ns), bound=0)
    assert done["generation"] >= 2 and contents(ns) == expected
    assert len(list_files(str(ns))) <= 8


def test_unreadable_parts_never_stop_a_fold(tmp_path, monkeypatch):
    ns = tmp_path / "v1-x"
    expected = write_parts(ns, 0, 6, 10, seed=7)
    (ns / "parts" / "20260101T999999-bad.parquet").write_bytes(b"PAR1 not parquet")
    assert compact(str(ns), bound=0)["generation"] == 1
    assert contents(ns) == expected
    monkeypatch.setattr(cache, "PART_BOUND", 3)  # the night's default bound
    write_parts(ns, 1000, 5, 2, seed=8)
    assert compact(str(ns))["generation"] == 2


def test_keys_array_round_trips():
    keys = np.array([b"\x00" * 15 + b"\x01", b"\xff" * 16], dtype="S16")
    assert keys_array(keys).to_pylist() == [b"\x00" * 15 + b"\x01", b"\xff" * 16]


@pytest.mark.parametrize("n", [0, 1])
def test_an_empty_namespace_compacts_to_nothing(tmp_path, n):
    ns = tmp_path / "v1-x"
    write_parts(ns, 0, n, 4, seed=9)
    done = compact(str(ns), bound=0)
    assert ("generation" in done) == bool(n)
