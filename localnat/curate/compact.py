"""Compaction of a score cache namespace: a year of nights stays a bounded number of objects
(docs/method.md §10).

    generations/g000008.json    the commit: its data files (with rows), index, the parts it
                                absorbed
    gen/g000008/data-*.parquet  cache_key + scores, in the order rows were written (a night's
                                hits come in runs), row groups of ROW_GROUP rows
    gen/g000008/index.parquet   every key once, sorted: cache_key, file, row

Under the namespace's lease, a compaction folds the parts a generation did not absorb into a
new one: the previous generation's data files stay as they are, but for the newest ones,
which are rewritten with the new rows while they are not twice the new rows (so there are
O(log rows) data files and a row is rewritten O(log rows) times). Every key once: the
previous generation's copy wins, then the earliest part (as a reader dedupes). The commit is
the generation's json, written last. Then, only while no other run is registered as a
reader (`readers/`, which a run writes before it reads anything), what no commit refers to
is deleted: absorbed parts, older generations, what a killed compaction left. Killed
anywhere, the latest commit and the parts it did not absorb are a whole cache.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..logs import LOG
from ..redact import redact
from . import cache
from .cache import KEY, as_numpy, keys_array, latest_generation, part_problem, view
from .lease import Lease, RunBusy, holders
from .storage import delete, filesystem, join, list_files, write_text

ROW_GROUP = 4096  # rows a reader reads to serve a hit of a data file
DROP_AFTER_S = 3600.0  # an unreadable part this old is not a write in flight: dropped


@contextmanager
def reading(ns: str):
    """Register this process as a reader of `ns` while it may read what a compaction
    would delete (registered before the view is taken)."""
    with Lease(ns, folder="readers", exclusive=False) as registration:
        yield registration


def compact(ns: str, bound: int | None = None, force: bool = False) -> dict:
    """Fold `ns`'s parts into a new generation once more than `bound` (PART_BOUND) of them
    are live (or whenever there are any, with `force`), then collect what no reader can need.
    Returns what it did; another compaction holding the lease makes it do nothing."""
    bound = cache.PART_BOUND if bound is None else bound
    try:
        with Lease(ns):
            return _compact(ns, bound, force)
    except RunBusy:
        return {"namespace": redact(ns), "skipped": "another compaction holds the namespace"}


def _compact(ns: str, bound: int, force: bool) -> dict:
    started = time.time()
    current = view(ns)
    out = {"namespace": redact(ns), "parts_before": len(current.parts)}
    if len(current.parts) > bound or (force and current.parts):
        generation = _fold(ns, current.generation, current.parts)
        out.update(generation=generation["generation"], rows=generation["rows"])
    out["collected"] = collect(ns)
    out["objects_after"] = len(list_files(ns))
    out["seconds"] = round(time.time() - started, 3)
    return out


def _fold(ns: str, previous: dict | None, parts: list[str]) -> dict:
    """Write and commit the next generation: `previous` and `parts` (usable ones), every key
    once. Returns its commit record."""
    number = (previous or {}).get("generation", 0) + 1
    home = f"gen/g{number:06d}"
    files = [tuple(f) for f in (previous or {}).get("files", [])]  # (path, rows)
    old_keys, old_file, old_row = _index(ns, previous)
    schema = _schema(ns, files, parts)
    usable = [p for p in parts if schema is not None and part_problem(p, schema) is None]
    # an unusable part is dropped once it is old: a young one may be a write in flight
    parts = usable + [p for p in parts if p not in usable and _age(p) > DROP_AFTER_S]
    fresh_rows = _fresh_rows(usable, old_keys)
    # the newest data files are rewritten with the new rows while they are not twice them
    keep, rows = len(files), sum(len(r) for r in fresh_rows)
    while keep and files[keep - 1][1] <= 2 * rows:
        keep -= 1
        rows += files[keep][1]
    written = f"{home}/data-{keep:05d}.parquet"
    new_keys = _write_data(ns, written, files[keep:], usable, fresh_rows, schema)
    mine = old_file < keep  # index entries of the data files kept as they are
    keys = np.concatenate([old_keys[mine], new_keys])
    file = np.concatenate([old_file[mine], np.full(len(new_keys), keep, np.int32)])
    row = np.concatenate([old_row[mine], np.arange(len(new_keys), dtype=np.int64)])
    order = np.argsort(keys, kind="stable")
    index = pa.table(
        {
            KEY: keys_array(keys[order]),
            "file": pa.array(file[order], pa.int16()),
            "row": pa.array(row[order], pa.int64()),
        }
    )
    _write(index, join(ns, f"{home}/index.parquet"))
    names = {p.rsplit("/", 1)[-1] for p in parts}
    for dropped in sorted(set(parts) - set(usable)):
        LOG.warning(f"cache part {redact(dropped)} cannot be read as this namespace's: dropped")
    record = {
        "generation": number,
        "files": [*files[:keep], (written, len(new_keys))],
        "index": f"{home}/index.parquet",
        "rows": int(len(keys)),
        "row_group": ROW_GROUP,
        "absorbed": sorted(set((previous or {}).get("absorbed", [])) | names),
        "committed_unix": time.time(),
    }
    write_text(join(ns, "generations", f"g{number:06d}.json"), json.dumps(record))  # commit
    LOG.info(
        f"cache {redact(ns)}: generation {number}, {len(keys):,} rows in "
        f"{len(record['files'])} data files ({len(parts)} parts folded)"
    )
    return record


def _age(uri: str) -> float:
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    return time.time() - info.mtime.timestamp() if info.mtime else float("inf")


def _index(ns: str, generation: dict | None):
    if not generation:
        return np.empty(0, "S16"), np.empty(0, np.int32), np.empty(0, np.int64)
    fs, path = filesystem(join(ns, generation["index"]))
    table = pq.read_table(path, filesystem=fs)
    return (
        as_numpy(table.column(KEY)),
        table.column("file").to_numpy().astype(np.int32),
        table.column("row").to_numpy().astype(np.int64),
    )


def _schema(ns: str, files: list, parts: list[str]) -> pa.Schema | None:
    """The namespace's columns: its generation's, else its first readable part's."""
    for uri in [join(ns, f) for f, _ in files[:1]] + parts:
        try:
            fs, path = filesystem(uri)
            return pq.read_schema(path, filesystem=fs)
        except Exception:  # noqa: BLE001 - an unreadable part is left to the next
            continue
    return None


def _fresh_rows(parts: list[str], known: np.ndarray) -> list[np.ndarray]:
    """Per part (in name order), the rows whose key neither an earlier part nor the previous
    generation holds."""
    keys = []
    for uri in parts:
        fs, path = filesystem(uri)
        keys.append(as_numpy(pq.read_table(path, filesystem=fs, columns=[KEY]).column(KEY)))
    if not keys:
        return []
    every = np.concatenate(keys)
    _, first = np.unique(every, return_index=True)
    keep = np.zeros(len(every), bool)
    keep[first] = True
    if len(known):
        at = np.minimum(np.searchsorted(known, every), len(known) - 1)
        keep &= known[at] != every
    cuts = np.cumsum([len(k) for k in keys])[:-1]
    return [np.flatnonzero(k) for k in np.split(keep, cuts)]


def _write_data(ns, name, rewritten, parts, fresh_rows, schema) -> np.ndarray:
    """One data file: the rows of the data files rewritten (streamed by row group), then the
    parts' fresh rows, in order, in row groups of ROW_GROUP; returns its keys in row order."""
    fs, path = filesystem(join(ns, name))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    keys = []

    def tables():
        for f, _ in rewritten:
            fs_in, path_in = filesystem(join(ns, f))
            with fs_in.open_input_file(path_in) as src:
                for batch in pq.ParquetFile(src).iter_batches(batch_size=ROW_GROUP):
                    yield pa.Table.from_batches([batch])
        for uri, rows in zip(parts, fresh_rows):
            fs_in, path_in = filesystem(uri)
            yield pq.read_table(path_in, filesystem=fs_in).take(pa.array(rows, pa.int64()))

    held, n = [], 0  # rows waiting for a whole row group: a reader finds row r in r // size
    with pq.ParquetWriter(path, schema, filesystem=fs, compression="zstd") as writer:
        for table in tables():
            table = table.select(schema.names).cast(schema)
            keys.append(as_numpy(table.column(KEY)))
            held.append(table)
            n += table.num_rows
            if n >= ROW_GROUP:
                rows = pa.concat_tables(held)
                whole = n - n % ROW_GROUP
                writer.write_table(rows.slice(0, whole), row_group_size=ROW_GROUP)
                held, n = [rows.slice(whole)], n % ROW_GROUP
        if n:
            writer.write_table(pa.concat_tables(held), row_group_size=ROW_GROUP)
    return np.concatenate(keys) if keys else np.empty(0, "S16")


def _write(table: pa.Table, uri: str) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs, compression="zstd", row_group_size=1 << 16)


def collect(ns: str) -> int:
    """Delete what the latest commit does not refer to (older generations, what a killed
    compaction left, the parts it absorbed), unless another run is reading `ns`. Call under
    the namespace's lease. Returns the objects deleted."""
    if holders(ns, "readers"):
        return 0  # a reader may hold an older view: the next compaction collects
    generation = latest_generation(ns)
    if generation is None:
        return 0
    commit = join(ns, "generations", f"g{generation['generation']:06d}.json")
    wanted = {join(ns, f) for f, _ in generation["files"]} | {join(ns, generation["index"])}
    absorbed = set(generation["absorbed"])
    gone = [u for u in list_files(join(ns, "parts")) if u.rsplit("/", 1)[-1] in absorbed]
    gone += [u for u in list_files(join(ns, "gen")) if u not in wanted]
    gone += [u for u in list_files(join(ns, "generations")) if u < commit]
    for uri in gone:
        delete(uri)
    if generation["absorbed"]:  # all deleted: readers need not exclude them any more
        write_text(commit, json.dumps({**generation, "absorbed": []}))
    return len(gone)


def compact_all(uri: str, bound: int | None = None, force: bool = False) -> list[dict]:
    """Every namespace under a cache root (`v1-*/`), or `uri` itself if it is one."""
    base = uri.rstrip("/")
    names = sorted({u[len(base) + 1 :].split("/", 1)[0] for u in list_files(base)})
    spaces = [join(base, n) for n in names if n.startswith("v1-")]
    if not spaces and "settings.json" in names:
        spaces = [base]
    return [compact(ns, bound, force) for ns in spaces]
