"""Compaction of a score cache namespace: never a row lost, changed or doubled; a reader
during it keeps what it reads; killed anywhere, the cache stays whole."""

import json
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

from localnat.curate.cache import namespace as cache
from localnat.curate.cache.keys import KEY
from localnat.curate.cache.lookup import Lookup, build_index
from localnat.curate.cache.namespace import keys_array, view
from localnat.curate.cache.writer import append, compact, declare, reading
from localnat.curate.storage import list_files

COLUMNS = ["local_nat", "n_response_tokens", "step_logprobs"]
SCHEMA = pa.schema(
    [
        (KEY, pa.binary(16)),
        ("local_nat", pa.float64()),
        ("n_response_tokens", pa.int64()),
        ("step_logprobs", pa.list_(pa.float64())),
    ]
)


def write_parts(ns: Path, first: int, n_parts: int, rows: int, seed: int) -> dict:
    """Parts of `rows` rows each, named in time order after every existing one; keys
    0..(first + n_parts*rows) with one repeat per part of a key an earlier part holds.
    Returns key -> values of the rows written (the earliest copy of a repeated key)."""
    rng = np.random.default_rng(seed)
    (ns / "parts").mkdir(parents=True, exist_ok=True)
    declare(str(ns), SCHEMA)
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


def test_compaction_folds_by_the_declared_schema_and_sets_aside_what_differs(tmp_path):
    """A float32 part that sorts oldest once made a compaction fold every other part away
    and serve its value: the namespace's declared schema decides, the odd part is set aside
    (kept, never deleted), and every reader leaves it out."""
    ns = tmp_path / "v1-x"
    expected = write_parts(ns, 0, 5, 10, seed=10)
    odd = pq.read_table(ns / "parts" / "20260101T000000-p.parquet")
    odd = odd.set_column(1, "local_nat", odd.column("local_nat").cast(pa.float32()))
    pq.write_table(odd, ns / "parts" / "20260101T000000-a-odd.parquet")  # sorts first
    before = ns / "parts" / "20260101T000000-a-odd.parquet"
    assert contents(ns, view(str(ns), SCHEMA)) == expected  # readers: not from the odd part
    done = compact(str(ns), bound=0)
    assert done["generation"] == 1 and done["set_aside"] == [str(before)]
    assert not before.exists() and (ns / "aside" / "parts-20260101T000000-a-odd.parquet").exists()
    assert contents(ns) == expected  # every good row, with its own value
    data = pq.read_table(ns / "gen" / "g000001" / "data-00000.parquet")
    assert data.schema.equals(SCHEMA) and data.num_rows == len(expected)
    assert compact(str(ns), bound=0)["collected"] == 0 or (ns / "aside").exists()


def test_a_generation_that_does_not_hold_its_declared_schema_serves_no_wrong_value(tmp_path):
    """Readers check a generation's data files as they check parts: one of other types is
    left out (its rows are misses, rescored), and the next compaction sets it aside and
    folds the rest."""
    ns = tmp_path / "v1-x"
    first = write_parts(ns, 0, 40, 10, seed=11)
    compact(str(ns), bound=0)
    second = write_parts(ns, 1000, 4, 10, seed=12)
    compact(str(ns), bound=0)  # generation 2: the first data file kept, the new rows after
    gen = json.loads((ns / "generations" / "g000002.json").read_text())
    assert len(gen["files"]) == 2
    first_file = ns / gen["files"][0][0]
    table = pq.read_table(first_file)
    pq.write_table(table.set_column(1, "local_nat", table.column(1).cast(pa.float32())), first_file)
    seen = contents(ns, view(str(ns), SCHEMA))
    assert set(seen) == set(second) - set(first) and all(seen[k] == second[k] for k in seen)
    done = compact(str(ns), bound=0)
    assert done["generation"] == 3 and str(first_file) in done["set_aside"]
    assert any((ns / "aside").iterdir())
    assert contents(ns, view(str(ns), SCHEMA)) == seen


def test_a_broken_index_is_rebuilt_from_the_data_files(tmp_path, said):
    ns = tmp_path / "v1-x"
    expected = write_parts(ns, 0, 6, 10, seed=13)
    compact(str(ns), bound=0)
    index = ns / "gen" / "g000001" / "index.parquet"
    index.write_bytes(index.read_bytes()[:-40])  # truncated: no footer
    assert contents(ns) == expected  # a reader rebuilds it, and says so
    assert any("cannot be read" in line for line in said)
    done = compact(str(ns), bound=0)  # no parts to fold: the index is rewritten whole
    assert done["index_rebuilt"] and pq.read_metadata(index).num_rows == len(expected)
    said.clear()
    assert contents(ns) == expected and not said


def test_cache_compact_says_what_is_wrong_in_one_line(tmp_path):
    for where in (tmp_path / "missing", tmp_path):
        out = subprocess.run(
            [sys.executable, "-m", "localnat.cli", "cache", "compact", str(where)],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr.startswith("localnat: error: no score cache at ")
        assert len(out.stderr.strip().splitlines()) == 1
    ns = tmp_path / "v1-old"
    write_parts(ns, 0, 2, 3, seed=14)
    (ns / "settings.json").write_text("{}")  # an older localnat's namespace: no schema
    (done,) = cache_compact_all(str(tmp_path))
    assert "declares no schema" in done["skipped"] and len(list((ns / "parts").iterdir())) == 2


def cache_compact_all(uri):
    from localnat.curate.cache.writer import compact_all

    return compact_all(uri, bound=0)


def test_a_store_that_refuses_an_append_costs_the_cache_not_the_night(tmp_path, monkeypatch, said):
    import errno

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    from localnat.curate.cache import writer

    monkeypatch.setattr(writer, "write_table", full)
    table = pa.table(
        {
            KEY: pa.array([b"k" * 16], pa.binary(16)),
            "reject_reason": pa.array([None], pa.string()),
            "reused": [False],
            "local_nat": [-1.0],
        }
    )
    for _ in range(3):
        append(str(tmp_path / "v1-x"), table, ["local_nat"])  # no exception
    assert len(said) == 1 and "refused new scores" in said[0] and "goes on" in said[0]
