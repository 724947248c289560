"""The one writer of a pass's parts: scores/ and rejects/ (one part per commit chunk per
call, named by file and chunk), and the score cache's appends. Both stages write through it
(the Prepare stage its cache hits, the Score stage what it scored), so part names, columns
and sizes are decided here; the driver commits them (commit.py)."""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .cache import append
from .columns import REJECT_COLUMNS
from .passes import Pass
from .storage import join, read_parquet_files, write_table


class Sink:
    """Writes a call's rows for `pass_`; `cache`: the namespace to append fresh scores to."""

    def __init__(self, pass_: Pass, cache: str | None = None):
        self.pass_, self.cache = pass_, cache

    def write(self, table: pa.Table, actor: str) -> pa.Table:
        """Write the rows (each with its chunk, `reused` and the call's id and estimate);
        return per-chunk counts for the driver's commit, `actor` naming who scored them."""
        if self.cache is not None:  # before the parts: a retry rescoring a call is harmless
            append(self.cache, table, list(self.pass_.results))
        counts = _write_parts(table, self.pass_.directory, list(self.pass_.columns))
        return counts.append_column("actor", pa.array([actor] * counts.num_rows, pa.string()))


def _write_parts(table: pa.Table, directory: str, columns: list[str]) -> pa.Table:
    if not table.num_rows:
        return pa.table({})
    # one pass over the rows: sorted by (file, chunk), stably, each chunk is then a slice (a
    # call of 512 one-row files is 512 chunks; a filter per chunk was quadratic)
    table = table.combine_chunks()
    files = table.column("file_index").to_numpy()
    chunks = table.column("chunk").to_numpy()
    order = np.lexsort((chunks, files))
    table = table.take(order)
    files, chunks = files[order], chunks[order]
    starts = np.flatnonzero(np.r_[True, (files[1:] != files[:-1]) | (chunks[1:] != chunks[:-1])])
    ends = np.r_[starts[1:], len(files)]
    call_id = table.column("call_id")[0].as_py()
    call_tokens = table.column("est_tokens")[0].as_py()
    return pa.Table.from_pylist(
        [
            _write_chunk(table.slice(a, b - a), directory, columns, call_id, table.num_rows)
            | {"call_tokens": call_tokens}
            for a, b in zip(starts, ends)
        ]
    )


def _write_chunk(rows: pa.Table, directory: str, columns: list[str], call_id, call_rows) -> dict:
    """One chunk's rows of a call: its scores/ and rejects/ parts and its counts."""
    index, chunk = rows.column("file_index")[0].as_py(), rows.column("chunk")[0].as_py()
    part = f"f{index:06d}-c{chunk:06d}-{uuid.uuid4().hex[:12]}.parquet"
    rejected = pc.is_valid(rows.column("reject_reason"))
    scored = rows.filter(pc.invert(rejected))
    bad = rows.filter(rejected)
    parts = []
    if scored.num_rows:
        write_table(scored.select(columns), join(directory, "scores", part))
        parts.append(f"scores/{part}")
    if bad.num_rows:
        write_table(bad.select(REJECT_COLUMNS), join(directory, "rejects", part))
        parts.append(f"rejects/{part}")
    ends = rows.filter(pc.is_valid(rows.column("chunk_rows")))
    return {
        "file_index": index,
        "chunk": chunk,
        "scored": scored.num_rows,
        "rejected": bad.num_rows,
        "chunk_rows": ends.column("chunk_rows")[0].as_py() if ends.num_rows else None,
        "last": ends.column("last_chunk")[0].as_py() if ends.num_rows else None,
        "reused": pc.sum(scored.column("reused")).as_py() or 0,
        # the student's work: tokens of rows scored here, not of cache hits
        "response_tokens": pc.sum(
            pc.if_else(scored.column("reused"), 0, scored.column("n_response_tokens"))
        ).as_py()
        or 0,
        "oom_splits": pc.sum(rows.column("oom_splits")).as_py() or 0,
        "parts": parts,
        "call_id": call_id,
        "call_rows": call_rows,
    }


def merge_parts(directory: str, chunk: tuple[int, int], parts: list[str]) -> list[str]:
    """A committed chunk's parts, at most one scores/ and one rejects/: several (one per call
    that held rows of the chunk) are merged into a new one. Returns what the
    marker lists; the parts merged stay until the pass's cleanup (no marker lists them)."""
    out = []
    for sub in ("scores", "rejects"):
        mine = [p for p in parts if p.startswith(f"{sub}/")]
        if len(mine) <= 1:
            out += mine
            continue
        table = read_parquet_files([join(directory, p) for p in mine])
        name = f"{sub}/f{chunk[0]:06d}-c{chunk[1]:06d}-{uuid.uuid4().hex[:12]}.parquet"
        write_table(table, join(directory, name))
        out.append(name)
    return out
