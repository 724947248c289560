"""Where a call's rows go: scores/ and rejects/ parts (per call, one part for the chunks
whole in it and one per chunk that spans calls, named by file and chunk; written by
outputs.py), and the score cache's appends. Both stages write through it (the pack stage
its cache hits, the Score stage what it scored), so part names, columns and sizes are
decided here; the driver commits them (outputs.py)."""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..cache.writer import append
from ..signals import REJECT_COLUMNS
from .nodes import check_this_node_sees
from .outputs import write
from .passes import Pass

# A call's costs as the scorer counts them (column -> `Scorer.stats` key), carried on the
# call's first row, summed per chunk and kept in its marker: a resumed run still counts what
# its earlier attempts spent. Model tokens are every token the student ran (prompt caches,
# inline prompts, segments), without padding.
CALL_COSTS = {
    "oom_splits": "oom_splits",
    "model_tokens": "tokens",
    "padded_tokens": "padded_tokens",
}


# What a call's write returns to the driver, one row per (file, chunk) of the call: what its
# commit counts, the parts holding its rows, and for a part several chunks of the call
# share, how many chunks list it (outputs.py keeps such a part only once all are committed).
CHUNK_COUNTS = pa.schema(
    [
        ("file_index", pa.int64()),
        ("chunk", pa.int64()),
        ("scored", pa.int64()),
        ("rejected", pa.int64()),
        ("chunk_rows", pa.int64()),  # the chunk's rows, on the call holding its last row
        ("last", pa.bool_()),  # the file's last chunk (known with chunk_rows)
        ("reused", pa.int64()),
        ("response_tokens", pa.int64()),
        *[(name, pa.int64()) for name in CALL_COSTS],
        ("parts", pa.list_(pa.string())),
        ("shared", pa.list_(pa.struct([("part", pa.string()), ("chunks", pa.int64())]))),
        ("call_id", pa.string()),
        ("call_rows", pa.int64()),
        ("call_tokens", pa.int64()),
        ("actor", pa.string()),
    ]
)


def shared_parts(counts: dict) -> dict[str, int]:
    """A CHUNK_COUNTS row's shared parts: part -> the chunks listing it."""
    return {s["part"]: s["chunks"] for s in counts["shared"] or ()}


class Sink:
    """Writes a call's rows for `pass_`; `cache`: the namespace to append fresh scores to."""

    def __init__(self, pass_: Pass, cache: str | None = None):
        self.pass_, self.cache = pass_, cache
        check_this_node_sees(pass_.seen)  # a node that joined late may write to its own disk

    def write(self, table: pa.Table, actor: str) -> pa.Table:
        """Write the rows (each with its chunk, `reused` and the call's id and estimate);
        return per-chunk counts for the driver's commit, `actor` naming who scored them."""
        if self.cache is not None:  # before the parts: a retry rescoring a call is harmless
            append(self.cache, table, list(self.pass_.results))
        counts = _write_parts(table, self.pass_.directory, list(self.pass_.columns))
        return pa.Table.from_pylist([c | {"actor": actor} for c in counts], schema=CHUNK_COUNTS)


def _write_parts(table: pa.Table, directory: str, columns: list[str]) -> list[dict]:
    """Per (file, chunk) of the call its counts and the parts holding its rows. The chunks
    whole in this call share one scores/ and one rejects/ part (a call of 512 one-row files
    writes two parts, not 1,024); a chunk whose rows span calls gets its own, merged when it
    commits. A shared part is an output only once every chunk listing it is committed
    (`shared` in each marker: part -> chunks listing it; outputs.py)."""
    if not table.num_rows:
        return []
    # sorted by (file, chunk), stably: each chunk is a slice (no filter per chunk)
    table = table.combine_chunks()
    files = table.column("file_index").to_numpy()
    chunks = table.column("chunk").to_numpy()
    order = np.lexsort((chunks, files))
    table = table.take(order)
    files, chunks = files[order], chunks[order]
    starts = np.flatnonzero(np.r_[True, (files[1:] != files[:-1]) | (chunks[1:] != chunks[:-1])])
    slices = [table.slice(a, b - a) for a, b in zip(starts, np.r_[starts[1:], len(files)])]
    counts = [_counts(rows) for rows in slices]
    whole = {i for i, c in enumerate(counts) if c["chunk_rows"] == c["scored"] + c["rejected"]}
    shared = {"scored": None, "rejected": None}
    if whole:
        shared = _write_rows(
            pa.concat_tables([slices[i] for i in sorted(whole)]), directory, columns
        )
    holders = {
        part: sum(1 for i in whole if counts[i][kind]) for kind, part in shared.items() if part
    }
    for i, c in enumerate(counts):
        if i in whole:
            c["parts"] = [part for kind, part in shared.items() if part and c[kind]]
            c["shared"] = [{"part": p, "chunks": holders[p]} for p in c["parts"] if holders[p] > 1]
        else:
            c["parts"] = [p for p in _write_rows(slices[i], directory, columns).values() if p]
            c["shared"] = []
        c |= {
            "call_id": table.column("call_id")[0].as_py(),
            "call_rows": table.num_rows,
            "call_tokens": table.column("est_tokens")[0].as_py(),
        }
    return counts


def _write_rows(rows: pa.Table, directory: str, columns: list[str]) -> dict:
    """Rows of one or more chunks -> {"scored": scores/ part, "rejected": rejects/ part}
    (None where there is none), named by the first row's file and chunk."""
    out = {"scored": None, "rejected": None}
    if not rows.num_rows:
        return out
    index, chunk = rows.column("file_index")[0].as_py(), rows.column("chunk")[0].as_py()
    part = f"f{index:06d}-c{chunk:06d}-{uuid.uuid4().hex[:12]}.parquet"
    rejected = pc.is_valid(rows.column("reject_reason"))
    scored = rows.filter(pc.invert(rejected))
    bad = rows.filter(rejected)
    if scored.num_rows:
        out["scored"] = f"scores/{part}"
        write(directory, out["scored"], scored.select(columns))
    if bad.num_rows:
        out["rejected"] = f"rejects/{part}"
        write(directory, out["rejected"], bad.select(REJECT_COLUMNS))
    return out


def _counts(rows: pa.Table) -> dict:
    """One chunk's rows of a call: its counts."""
    rejected = pc.is_valid(rows.column("reject_reason"))
    scored = rows.filter(pc.invert(rejected))
    ends = rows.filter(pc.is_valid(rows.column("chunk_rows")))
    return {
        "file_index": rows.column("file_index")[0].as_py(),
        "chunk": rows.column("chunk")[0].as_py(),
        "scored": scored.num_rows,
        "rejected": rows.num_rows - scored.num_rows,
        "chunk_rows": ends.column("chunk_rows")[0].as_py() if ends.num_rows else None,
        "last": ends.column("last_chunk")[0].as_py() if ends.num_rows else None,
        "reused": pc.sum(scored.column("reused")).as_py() or 0,
        # the student's work: tokens of rows scored here, not of cache hits
        "response_tokens": pc.sum(
            pc.if_else(scored.column("reused"), 0, scored.column("n_response_tokens"))
        ).as_py()
        or 0,
        **{name: pc.sum(rows.column(name)).as_py() or 0 for name in CALL_COSTS},
    }
