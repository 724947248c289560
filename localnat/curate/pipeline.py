"""The Ray Data graph, top to bottom in the order data flows:

    input files (one block each) -> Prepare: read + validate in commit chunks, look rows
      up in the score cache (hits are written here, with their cached scores), tokenize +
      segment the rest, pack into token-bounded calls (CPU actors) -> one call per block
      -> Score: score a call, write its scores/ and rejects/ parts, append its fresh
      scores to the cache (one student per actor)

Building the graph has no side effects; `run_job` executes it. Every stage keeps every row:
a bad row carries `reject_reason` to the writer, which puts it in rejects/.
Parts are named by input file and chunk (f000012-c000003-<uuid>.parquet); the driver
commits them (commit.py).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
import zlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..logs import setup as setup_logs
from ..scoring.config import ScoreConfig
from ..scoring.prepare import Prepared, Preparer
from ..scoring.schema import UNSAMPLED_SCHEMA
from ..scoring.student import load_tokenizer
from .cache import HIT_CALL_TOKENS, Lookup, write_part
from .columns import (
    REJECT_COLUMNS,
    UNSAMPLED_COLUMNS,
    UNSAMPLED_RESULTS,
    result_columns,
    score_columns,
)
from .config import CurateConfig
from .formats import read_rows
from .inputs import hive_columns
from .records import file_reject, normalize
from .storage import join, write_table

READ_CHUNK_ROWS = 256
# What a file's own content raises (corrupt Parquet, a truncated gzip, undecodable bytes):
# the file is rejected. Anything else (a storage error) fails the task, which Ray retries
# and a rerun resumes: a transient error must never commit a file cut short.
BAD_FILE = (ValueError, EOFError, zlib.error, pa.ArrowException)
_TOKEN_COLUMNS = ["prompt_ids", "response_ids", "bounds", "step_starts", "step_ends"]


def build(
    files: list[tuple[int, str, str]],
    cfg: CurateConfig,
    run_dir: str,
    skip: dict,
    cache: tuple[str, list[str]] | None = None,
    rows: dict[int, list[int]] | None = None,
):
    """Dataset of per-chunk write counts; iterating it runs the job. `skip`: file index ->
    chunks already committed; `cache`: the cache namespace and its readable parts; `rows`:
    racing's exact pass (file index -> the row numbers to read, no others), which scores
    only the steps each row's sample left out (`Scorer.score_unsampled`)."""
    import ray.data

    ds = ray.data.from_items(
        [
            {
                "file_index": i,
                "uri": uri,
                "root": root,
                "skip": skip.get(i, []),
                "rows": None if rows is None else rows[i],
            }
            for i, uri, root in files
        ],
        override_num_blocks=max(1, len(files)),  # blocks follow files
    )
    ds = ds.map_batches(
        Prepare,
        batch_size=1,
        batch_format="pyarrow",
        fn_constructor_kwargs={
            "cfg": cfg,
            "run_dir": run_dir,
            "cache_parts": cache[1] if cache else None,
            "unsampled": rows is not None,
        },
        num_cpus=0.5,
        # Scale reading and tokenizing with the students so they never wait.
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(2, 2 * cfg.actors)),
    )
    # One call per block: a Score task is one call, so its rows are written (and their
    # chunks committed) as soon as it returns, and the actors share the calls.
    ds = ds.repartition(target_num_rows_per_block=1)
    # The actor writes its call's rows itself: no extra task (and worker process) per call.
    return ds.map_batches(
        Score,
        batch_size=1,
        batch_format="pyarrow",
        fn_constructor_kwargs={
            "cfg": cfg,
            "run_dir": run_dir,
            "cache": cache and cache[0],
            "unsampled": rows is not None,
        },
        # One call in flight per actor: a long call never holds short ones in its queue.
        compute=ray.data.ActorPoolStrategy(size=cfg.actors, max_tasks_in_flight_per_actor=1),
        # Ray Data's actor defaults restart a killed actor and retry its call.
        num_gpus=cfg.gpus_per_actor or None,
        num_cpus=cfg.cpus_per_actor,
    )


class Prepare:
    """CPU stage, one input file per call: read + validate in commit chunks (`read_files`),
    tokenize and segment (`Tokenize`), and pack the rows into calls of at most
    `cfg.call_tokens` estimated model tokens (a larger row goes alone). Each call is emitted
    as one row holding its rows as Arrow IPC bytes, so the work of one Score call is bounded
    by tokens, never by rows."""

    def __init__(
        self,
        cfg: CurateConfig,
        run_dir: str,
        cache_parts: list[str] | None = None,
        unsampled: bool = False,
    ):
        setup_logs(cfg.verbose)
        self.cfg, self.run_dir = cfg, run_dir
        self._tokenize: Tokenize | None = None  # loaded at the first miss: a night of hits
        self.results, self.written = outputs(cfg.score, unsampled)
        self.lookup = None
        if cache_parts is not None:
            self.lookup = Lookup(cache_parts, cfg, columns=self.results)

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        pending, tokens = [], 0
        hits, hit_tokens = [], 0
        for piece in read_files(batch, self.cfg):
            if self.lookup is not None:
                found, piece = self.lookup.split(piece)
                if found.num_rows:
                    hits.append(found.append_column("reused", pa.array([True] * found.num_rows)))
                    hit_tokens += pc.sum(found.column("n_response_tokens")).as_py()
                if hit_tokens >= HIT_CALL_TOKENS:
                    yield self._write_hits(hits)
                    hits, hit_tokens = [], 0
                if not piece.num_rows:
                    continue
            piece = piece.append_column("reused", pa.array([False] * piece.num_rows))
            piece = self.tokenize(piece)
            start = 0
            for i, cost in enumerate(row_costs(piece, self.cfg)):
                if tokens and tokens + cost > self.cfg.call_tokens:
                    pending.append(piece.slice(start, i - start))
                    yield _call_row(pending, tokens)
                    pending, tokens, start = [], 0, i
                tokens += cost
            pending.append(piece.slice(start))
        if any(t.num_rows for t in pending):
            yield _call_row(pending, tokens)
        if hits:
            yield self._write_hits(hits)

    def tokenize(self, piece: pa.Table) -> pa.Table:
        if self._tokenize is None:  # transformers and the tokenizer take seconds to load
            self._tokenize = Tokenize(self.cfg)
        return self._tokenize(piece)

    def _write_hits(self, hits: list[pa.Table]) -> pa.Table:
        """Cache hits need no student: written here, and only their counts flow on (the
        Score stage passes them through), so a night of hits moves no rows between actors."""
        table = pa.concat_tables(hits)
        call_id = uuid.uuid4().hex[:12]
        n = table.num_rows
        table = table.append_column("oom_splits", pa.array([0] * n, pa.int64()))
        table = table.append_column("call_id", pa.array([call_id] * n, pa.string()))
        table = table.append_column("est_tokens", pa.array([0] * n, pa.int64()))
        counts = write_parts(table, self.run_dir, self.written)
        counts = counts.append_column("actor", pa.array(["cache"] * counts.num_rows))
        return _call_row([counts], 0, cached=True, call_id=call_id)


def row_costs(table: pa.Table, cfg: CurateConfig) -> list[int]:
    """Estimated model tokens of each row: the prompt, the global pass, and each step's tokens
    again as target or context of the windows that hold it (about k+1 times for a fixed k,
    w*n/2+1 for a fraction w, at most the number of steps). Rejected rows cost nothing."""
    out = []
    prompts = table.column("prompt_ids").to_pylist()
    for prompt, bounds in zip(prompts, table.column("bounds").to_pylist()):
        if bounds is None:
            out.append(0)
            continue
        n, steps = bounds[-1], len(bounds) - 1
        reuse = sum(
            min(w.k + 1 if w.k is not None else w.w * steps / 2 + 1, steps)
            for w in cfg.score.windows
        )
        out.append(int(len(prompt) + n * (1 + reuse)))
    return out


def _call_row(
    tables: list[pa.Table], tokens: int, cached: bool = False, call_id: str | None = None
) -> pa.Table:
    """A call as one row: its rows as Arrow IPC bytes; `cached`: the counts of cache hits
    already written."""
    table = pa.concat_tables([t for t in tables if t.num_rows])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return pa.table(
        {
            "call_id": [call_id or uuid.uuid4().hex[:12]],
            "est_tokens": [tokens],
            "call": pa.array([sink.getvalue().to_pybytes()], pa.large_binary()),
            "cached": [cached],
        }
    )


def _read_call(batch: pa.Table) -> pa.Table:
    with pa.ipc.open_stream(batch.column("call")[0].as_py()) as reader:
        return reader.read_all()


def read_files(batch: pa.Table, cfg: CurateConfig) -> Iterator[pa.Table]:
    """Read + validate, in file order, in commit chunks of `cfg.commit_rows` rows (see
    `Chunker`). Chunks in `skip` were committed by an earlier attempt: their rows are read
    past, not emitted. An unreadable file (or the unreadable rest of one) becomes one reject
    row after the rows read. With `rows` (racing's exact pass) only those rows are read,
    chunked among themselves."""
    wanted = [*cfg.columns.values()] + ([cfg.score.step_column] if cfg.score.step_column else [])
    for item in batch.to_pylist():
        index, uri = item["file_index"], item["uri"]
        only = None if item.get("rows") is None else set(item["rows"])
        hive = hive_columns(uri, item["root"])
        chunker = Chunker(
            cfg.commit_rows,
            set(item["skip"] or ()),
            lambda rows, uri=uri, index=index, hive=hive: _normalize_piece(
                rows, uri, index, hive, cfg
            ),
        )
        try:
            for rows in read_rows(uri, cfg.input_format, wanted, READ_CHUNK_ROWS):
                for row in rows:
                    if only is None or row[0] in only:
                        yield from chunker.add(row)
        except BAD_FILE as err:  # a corrupt file is a reject row; an I/O error is raised
            if isinstance(err, OSError):
                raise
            where = f"rows from {chunker.seen} on not read: " if chunker.seen else ""
            yield from chunker.add((None, f"{where}{type(err).__name__}: {err}"))
        else:
            if not chunker.seen:
                yield from chunker.add((None, "file has no rows"))
        yield from chunker.flush(end=True, last=True)


class Chunker:
    """Groups one file's rows, in order, into commit chunks of `size` rows, emitted in
    pieces of at most READ_CHUNK_ROWS. The last row of a chunk carries `chunk_rows` (the
    chunk's row count) and `last_chunk`, so the driver knows when a chunk, and the file, is
    complete. A full chunk is held back until the next row shows it is not the file's last."""

    def __init__(self, size: int, skip: set, make):
        self.size, self.skip, self.make = size, skip, make
        self.pending: list = []
        self.seen = 0  # rows of the file so far, rejects included: decides the chunk

    def add(self, row) -> Iterator[pa.Table]:
        if self.seen and self.seen % self.size == 0:  # the chunk before is complete
            yield from self.flush(end=True)
        elif len(self.pending) >= READ_CHUNK_ROWS:
            yield from self.flush(end=False)
        self.pending.append(row)
        self.seen += 1

    def flush(self, end: bool, last: bool = False) -> Iterator[pa.Table]:
        chunk = (self.seen - 1) // self.size
        if self.pending and chunk not in self.skip:
            n = (self.seen - 1) % self.size + 1 if end else None
            # made before the rows are let go: a piece that fails keeps them (the run fails)
            table = _with_chunk(self.make(self.pending), chunk, n, last)
            self.pending = []
            yield table
        else:
            self.pending = []  # rows of a committed chunk: read past


def _normalize_piece(rows: list, uri: str, index: int, hive: dict, cfg) -> pa.Table:
    """Rows of one file -> WORK_SCHEMA; a row index of None is the file's reject row."""
    tables, run = [], []
    for row in rows:
        if row[0] is None:
            if run:
                tables.append(normalize(run, uri, index, hive, cfg))
                run = []
            tables.append(file_reject(uri, index, row[1]))
        else:
            run.append(row)
    if run:
        tables.append(normalize(run, uri, index, hive, cfg))
    return pa.concat_tables(tables)


def _with_chunk(table: pa.Table, chunk: int, rows: int | None, last: bool) -> pa.Table:
    n = table.num_rows
    tail = lambda v: [None] * (n - 1) + [v]  # noqa: E731 - only the chunk's last row says
    table = table.append_column("chunk", pa.array([chunk] * n, pa.int32()))
    table = table.append_column("chunk_rows", pa.array(tail(rows), pa.int64()))
    return table.append_column("last_chunk", pa.array(tail(last if rows else None), pa.bool_()))


class Tokenize:
    """Tokenize once with offsets, segment, apply the token-to-step rule; reject responses
    over --max-response-tokens."""

    def __init__(self, cfg: CurateConfig):
        self.prepare = Preparer(load_tokenizer(cfg.score), cfg.score)
        self.max_tokens = cfg.max_response_tokens

    def __call__(self, table: pa.Table) -> pa.Table:
        cols = {name: [] for name in _TOKEN_COLUMNS}
        reasons = table.column("reject_reason").to_pylist()
        for i, row in enumerate(table.select(["prompt", "response", "steps_json"]).to_pylist()):
            item = Prepared(error=reasons[i])
            if item.error is None:
                steps = None if row["steps_json"] is None else json.loads(row["steps_json"])
                item = self.prepare(row["prompt"], row["response"], steps)
            n = len(item.response_ids) if item.error is None else 0
            if self.max_tokens is not None and n > self.max_tokens:
                item = Prepared(error=f"response has {n:,} tokens, over max-response-tokens")
            reasons[i] = item.error
            ok = item.error is None
            cols["prompt_ids"].append(item.prompt_ids.tolist() if ok else None)
            cols["response_ids"].append(item.response_ids.tolist() if ok else None)
            cols["bounds"].append(item.bounds.tolist() if ok else None)
            cols["step_starts"].append([s for s, _ in item.spans] if ok else None)
            cols["step_ends"].append([e for _, e in item.spans] if ok else None)
        table = table.set_column(
            table.schema.get_field_index("reject_reason"),
            "reject_reason",
            pa.array(reasons, pa.string()),
        )
        for name in _TOKEN_COLUMNS:
            kind = pa.int64() if name.startswith("step") else pa.int32()
            table = table.append_column(name, pa.array(cols[name], pa.list_(kind)))
        return table


class Score:
    """GPU (or CPU) stage: one student per actor, loaded once; scores one call and writes
    its rows (`write_parts`), returning the per-chunk counts."""

    def __init__(
        self, cfg: CurateConfig, run_dir: str, cache: str | None = None, unsampled: bool = False
    ):
        setup_logs(cfg.verbose)
        self.cfg, self.run_dir, self.cache = cfg, run_dir, cache
        import torch

        if cfg.gpus_per_actor == 0 and cfg.score.device in ("cpu", "auto"):
            # Ray sets OMP threads to the actor's (fractional) CPUs; use the machine's share.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.actors))
        from ..scoring.api import Scorer  # torch: only in the actors that score

        self._use(Scorer(cfg.score), unsampled)

    def _use(self, scorer, unsampled: bool) -> None:
        """Score with `scorer`: whole rows, or the steps each row's sample left out (racing's
        exact pass, `unsampled`)."""
        self.scorer = scorer
        self.method = scorer.score_unsampled if unsampled else scorer.score_prepared
        self.schema = UNSAMPLED_SCHEMA if unsampled else scorer.schema
        self.results, self.written = outputs(scorer.cfg, unsampled)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if batch.column("cached")[0].as_py():
            return _read_call(batch)  # hits, written by Prepare: their counts
        table = self.score(batch)
        if self.cache is not None:  # after the parts it repeats: a retry rescoring is fine
            write_part(self.cache, table, self.results)
        counts = write_parts(table, self.run_dir, self.written)
        actor = f"{socket.gethostname()}:{os.getpid()}"  # which student scored the call
        return counts.append_column("actor", pa.array([actor] * counts.num_rows, pa.string()))

    def score(self, batch: pa.Table) -> pa.Table:
        """One call (see `Prepare`) -> its rows with scores, or reasons."""
        table = _read_call(batch)
        reasons = table.column("reject_reason").to_pylist()
        items = []
        for i, row in enumerate(table.select(_TOKEN_COLUMNS).to_pylist()):
            if reasons[i] is not None:
                items.append(Prepared(error=reasons[i]))
                continue
            items.append(
                Prepared(
                    np.asarray(row["prompt_ids"], dtype=np.int64),
                    np.asarray(row["response_ids"], dtype=np.int64),
                    np.asarray(row["bounds"], dtype=np.int64),
                    list(zip(row["step_starts"], row["step_ends"])),
                )
            )
        before = dict(self.scorer.stats)
        try:
            results = self.method(items)
        except Exception:  # noqa: BLE001 - find the row that fails, keep the others
            results = [self._score_one(item) for item in items]
        scores = pa.Table.from_pylist(results, schema=self.schema)
        reasons = [r.get("error") for r in results]
        table = table.drop_columns(_TOKEN_COLUMNS)
        table = table.set_column(
            table.schema.get_field_index("reject_reason"),
            "reject_reason",
            pa.array(reasons, pa.string()),
        )
        for name in self.results:
            table = table.append_column(name, scores.column(name))
        oom = self.scorer.stats["oom_splits"] - before["oom_splits"]
        splits = ([oom] + [0] * (table.num_rows - 1))[: table.num_rows]
        table = table.append_column("oom_splits", pa.array(splits, pa.int64()))
        return _with_call(table, batch)

    def _score_one(self, item: Prepared) -> dict:
        try:
            return self.method([item])[0]
        except Exception as err:  # noqa: BLE001
            return {"status": "error", "error": f"scoring failed: {type(err).__name__}: {err}"}


def _with_call(table: pa.Table, batch: pa.Table) -> pa.Table:
    for name in ("call_id", "est_tokens"):  # each row says which call scored it
        value = batch.column(name)[0]
        table = table.append_column(name, pa.array([value.as_py()] * table.num_rows, value.type))
    return table


def outputs(score: ScoreConfig, unsampled: bool) -> tuple[list[str], list[str]]:
    """The scorer's result columns (what the cache holds) and the columns written to scores/,
    of a first pass or of racing's exact pass (`unsampled`)."""
    if unsampled:
        return UNSAMPLED_RESULTS, UNSAMPLED_COLUMNS
    return result_columns(score), score_columns(score)


def write_parts(table: pa.Table, run_dir: str, columns: list[str]) -> pa.Table:
    """Write this batch's rows under scores/ (`columns`) and rejects/, one part per commit
    chunk (f000012-c000003-<uuid>.parquet); return per-chunk counts for the driver."""
    counts = []
    rejected = pc.is_valid(table.column("reject_reason"))
    keys = zip(table.column("file_index").to_pylist(), table.column("chunk").to_pylist())
    for index, chunk in sorted(set(keys)):
        mine = pc.and_(
            pc.equal(table.column("file_index"), index), pc.equal(table.column("chunk"), chunk)
        )
        part = f"f{index:06d}-c{chunk:06d}-{uuid.uuid4().hex[:12]}.parquet"
        scored = table.filter(pc.and_(mine, pc.invert(rejected)))
        bad = table.filter(pc.and_(mine, rejected))
        parts = []
        if scored.num_rows:
            write_table(scored.select(columns), join(run_dir, "scores", part))
            parts.append(f"scores/{part}")
        if bad.num_rows:
            write_table(bad.select(REJECT_COLUMNS), join(run_dir, "rejects", part))
            parts.append(f"rejects/{part}")
        ends = table.filter(pc.and_(mine, pc.is_valid(table.column("chunk_rows"))))
        counts.append(
            {
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
                "oom_splits": pc.sum(table.filter(mine).column("oom_splits")).as_py() or 0,
                "parts": parts,
                "call_id": table.column("call_id")[0].as_py(),
                "call_rows": table.num_rows,
                "call_tokens": table.column("est_tokens")[0].as_py(),
            }
        )
    return pa.Table.from_pylist(counts)
