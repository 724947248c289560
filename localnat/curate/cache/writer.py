"""The one writer of a score cache namespace (docs/method.md §10): its settings.json, a
night's parts (appended by the sink), the reader's registration, and compaction, which
keeps a year of nights a bounded number of objects.

    settings.json               what its scores depend on, and the schema its files hold
    parts/<time>-<uuid>.parquet cache_key + scores of one call's freshly scored rows
    readers/<owner>.json        the runs reading it now (leases, run/lease.py)
    generations/g000008.json    the commit: its data files (with rows), index, the parts it
                                absorbed
    gen/g000008/data-*.parquet  cache_key + scores, in the order rows were written (a night's
                                hits come in runs), row groups of ROW_GROUP rows
    gen/g000008/index.parquet   every key once, sorted: cache_key, file, row

Under the namespace's lease, a compaction folds the parts a generation did not absorb into a
new one, by the schema the namespace's settings.json declares. The previous generation's
data files stay as they are, but for the newest ones, which are rewritten with the new rows
while they are not twice the new rows (so there are O(log rows) data files and a row is
rewritten O(log rows) times). Every key once: the previous generation's copy wins, then the
earliest part (as a reader dedupes). The commit is the generation's json, written last.
Then, only while no other run is registered as a reader (`readers/`, which a run writes
before it reads anything), what no commit refers to is deleted: absorbed parts, older
generations, what a killed compaction left. Killed anywhere, the latest commit and the
parts it did not absorb are a whole cache.

What cannot be used is set aside in `aside/`, never deleted: a part of other types (or
unreadable for an hour), a data file that does not hold what its commit says (its rows
are left out of the next generation). A broken index is rebuilt from the data files.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...logs import LOG
from ...redact import redact
from ..run.lease import Lease, RunBusy, holders
from ..storage import (
    delete,
    filesystem,
    join,
    list_files,
    move,
    write_table,
    write_text,
)
from . import namespace as cache
from .keys import KEY, as_numpy, file_keys, member
from .namespace import (
    bad_data_files,
    declared_schema,
    index_whole,
    keys_array,
    latest_generation,
    load_index,
    part_problem,
    schema_text,
    view,
)

ROW_GROUP = 4096  # rows a reader reads to serve a hit of a data file
DROP_AFTER_S = 3600.0  # an unreadable part this old is not a write in flight: set aside


def declare(ns: str, schema: pa.Schema, about: dict | None = None) -> None:
    """Write the namespace's settings.json: what its scores depend on (`about`) and the
    schema every part and data file of it holds."""
    body = {**(about or {}), "schema": schema_text(schema)}
    write_text(join(ns, "settings.json"), redact(json.dumps(body, indent=2, default=str)))


_append_failed: set[str] = set()  # namespaces this process could not append to


def append(ns: str, table: pa.Table, columns: list[str]) -> None:
    """Append the freshly scored rows of a call (not rejected, not reused) to the cache:
    their key and `columns`, as a new part (the writer is `sink.Sink`). A store that refuses
    it (full, read-only) costs the cache these rows, said once, never the night."""
    fresh = table.filter(
        pc.and_(pc.is_null(table.column("reject_reason")), pc.invert(table.column("reused")))
    )
    if not fresh.num_rows:
        return
    name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.parquet"
    try:
        write_table(fresh.select([KEY, *columns]), join(ns, "parts", name))
    except OSError as err:
        if ns not in _append_failed:
            _append_failed.add(ns)
            LOG.warning(
                f"the score cache {redact(ns)} refused new scores ({type(err).__name__}: "
                f"{str(err)[:200]}): the run goes on, these rows will be scored again next time"
            )


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
    out = {"namespace": redact(ns)}
    schema = declared_schema(ns)
    if schema is None:
        return {
            **out,
            "skipped": "its settings.json declares no schema (a namespace of an older "
            "localnat, or damaged): nothing folded or deleted",
        }
    current = view(ns)
    usable, aside = _sort_parts(current.parts, schema)
    bad = bad_data_files(ns, current.generation, schema)
    out.update(parts_before=len(current.parts), set_aside=[redact(p) for p in aside])
    for uri in aside:
        _set_aside(ns, uri)
    if len(usable) > bound or (force and usable) or bad:
        generation = _fold(ns, current.generation, usable, schema, bad)
        out.update(generation=generation["generation"], rows=generation["rows"])
        for number in sorted(bad):  # out of the new generation: kept aside, not collected
            uri = join(ns, current.generation["files"][number][0])
            _set_aside(ns, uri)
            out["set_aside"].append(redact(uri))
    elif current.generation and not index_whole(ns, current.generation):
        keys, file, row = load_index(ns, current.generation)  # said, and rebuilt
        _write(_index_table(keys, file, row), join(ns, current.generation["index"]))
        out["index_rebuilt"] = True
    out["collected"] = collect(ns)
    out["objects_after"] = len(list_files(ns))
    out["seconds"] = round(time.time() - started, 3)
    return out


def _sort_parts(parts: list[str], schema: pa.Schema) -> tuple[list[str], list[str]]:
    """(the parts that hold the declared schema, those to set aside): a part of other
    columns or types now, an unreadable one once it is old (younger, it may be a write in
    flight); the others stay where they are for the next compaction."""
    usable, aside = [], []
    for uri, problem in zip(parts, map(lambda p: part_problem(p, schema), parts)):
        if problem is None:
            usable.append(uri)
        elif problem[0] != "is unreadable" or _age(uri) > DROP_AFTER_S:
            LOG.warning(f"cache part {redact(uri)} {problem[0]} ({problem[1]}): set aside")
            aside.append(uri)
    return usable, aside


def _set_aside(ns: str, uri: str) -> None:
    """Out of the cache's way, never deleted: `aside/` keeps it for a person to look at."""
    move(uri, join(ns, "aside", uri[len(ns) :].strip("/").replace("/", "-")))


def _fold(ns: str, previous: dict | None, parts: list[str], schema: pa.Schema, bad) -> dict:
    """Write and commit the next generation: `previous` (but its `bad` data files) and
    `parts` (usable ones), every key once. Returns its commit record."""
    number = (previous or {}).get("generation", 0) + 1
    home = f"gen/g{number:06d}"
    files = [tuple(f) for f in (previous or {}).get("files", [])]  # (path, rows)
    old_keys, old_file, old_row = load_index(ns, previous, bad)
    fresh_rows = _fresh_rows(parts, old_keys)
    # the newest data files are rewritten with the new rows while they are not twice them;
    # a bad one, and every one after it, is rewritten (without the bad one's rows)
    keep, rows = min([len(files), *bad]), sum(len(r) for r in fresh_rows)
    rows += sum(n for i, (_, n) in enumerate(files[keep:], keep) if i not in bad)
    while keep and files[keep - 1][1] <= 2 * rows:
        keep -= 1
        rows += files[keep][1]
    rewritten = [f for i, f in enumerate(files[keep:], keep) if i not in bad]
    written = f"{home}/data-{keep:05d}.parquet"
    new_keys = _write_data(ns, written, rewritten, parts, fresh_rows=fresh_rows, schema=schema)
    mine = old_file < keep  # index entries of the data files kept as they are
    keys = np.concatenate([old_keys[mine], new_keys])
    file = np.concatenate([old_file[mine], np.full(len(new_keys), keep, np.int32)])
    row = np.concatenate([old_row[mine], np.arange(len(new_keys), dtype=np.int64)])
    order = np.argsort(keys, kind="stable")
    _write(_index_table(keys[order], file[order], row[order]), join(ns, f"{home}/index.parquet"))
    names = {p.rsplit("/", 1)[-1] for p in parts}
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


def _index_table(keys: np.ndarray, file: np.ndarray, row: np.ndarray) -> pa.Table:
    """The index file's table: every key once, sorted, and where its row lies."""
    return pa.table(
        {
            KEY: keys_array(keys),
            "file": pa.array(file, pa.int16()),
            "row": pa.array(row, pa.int64()),
        }
    )


def _age(uri: str) -> float:
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    return time.time() - info.mtime.timestamp() if info.mtime else float("inf")


def _fresh_rows(parts: list[str], known: np.ndarray) -> list[np.ndarray]:
    """Per part (in name order), the rows whose key neither an earlier part nor the previous
    generation holds."""
    keys = [file_keys(uri) for uri in parts]
    if not keys:
        return []
    every = np.concatenate(keys)
    _, first = np.unique(every, return_index=True)
    keep = np.zeros(len(every), bool)
    keep[first] = True
    keep &= ~member(every, known)[0]
    cuts = np.cumsum([len(k) for k in keys])[:-1]
    return [np.flatnonzero(k) for k in np.split(keep, cuts)]


def _write_data(ns, name, rewritten, parts, *, fresh_rows, schema) -> np.ndarray:
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


class NoCache(LookupError):
    """`localnat cache compact` on a location that holds no score cache."""


def compact_all(uri: str, bound: int | None = None, force: bool = False) -> list[dict]:
    """Every namespace under a cache root (`v1-*/`), or `uri` itself if it is one."""
    base = uri.rstrip("/")
    try:
        names = sorted({u[len(base) + 1 :].split("/", 1)[0] for u in list_files(base)})
    except NotADirectoryError:
        names = []
    spaces = [join(base, n) for n in names if n.startswith("v1-")]
    if not spaces and "settings.json" in names:
        spaces = [base]
    if not spaces:
        raise NoCache(
            f"no score cache at {redact(uri)}: no namespace (v1-*/ with a settings.json) under "
            "it; give the --cache URI a run used"
        )
    return [compact(ns, bound, force) for ns in spaces]
