"""The Ray Data graph of one scoring pass, top to bottom in the order data flows:

    input files (one block each)
      -> pack (CPU tasks): read + validate in commit chunks, look rows up in the score
         cache (hits are written at once, through the sink), tokenize + segment the rest,
         pack them into calls of at most --call-tokens estimated model tokens
      -> one call per block
      -> Score (one student per actor): score a call, write it through the sink
      -> per-chunk counts, which the driver commits (directory.py)

Building the graph has no side effects; iterating it runs the pass. Every stage keeps every
row: a bad row carries `reject_reason` to the sink, which puts it in rejects/.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from ...logs import setup as setup_logs
from ...scoring.student import load_tokenizer
from ..cache.lookup import Lookup
from ..cache.namespace import HIT_CALL_TOKENS
from ..inputs.chunks import read_files
from ..inputs.plan import file_groups
from ..settings import Calling, Reading, Sizing
from .cost import row_costs
from .identity import StudentIdentity, checked_load, verify
from .passes import Pass
from .progress import READING_CPUS, reading_tasks
from .sink import CALL_COSTS, Sink
from .tokens import TOKEN_COLUMNS, Tokenize, prepared_items, set_reasons


def build(
    pass_: Pass,
    files,
    student,
    *,
    reading: Reading,
    calling: Calling,
    sizing: Sizing,
    skip: dict,
    cache=None,
    sizes=None,
):
    """The dataset of per-chunk counts of `pass_` over `files` ((index, uri, root) each) by
    `student` (its StudentIdentity: what the actors load and check) under the stages'
    settings; `skip`: file index -> chunks already committed;
    `cache`: the score cache's shared view (`lookup.shared_view`); `sizes`: file index ->
    bytes, to read small files in groups."""
    import ray.data

    items = []
    for i, uri, root in files:
        picked = None if pass_.rows is None else pass_.rows[i]
        items.append(
            {"file_index": i, "uri": uri, "root": root, "skip": skip.get(i, []), "rows": picked}
        )
    sizes = sizes or {}
    groups = [items[g] for g in file_groups([sizes.get(i) for i, _, _ in files])]
    ds = ray.data.from_items(
        [{"files": json.dumps(g)} for g in groups],
        override_num_blocks=max(1, len(groups)),  # one block per group of files
    )
    ds = ds.map_batches(
        pack,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={
            "reading": reading,
            "calling": calling,
            "pass_": pass_,
            "student": student,
            "cache": cache,
        },
        num_cpus=READING_CPUS,
        # Tasks, not actors: Ray reuses a task's process, so the next pass of a run (a
        # racing round, a ranking block) finds transformers and its tokenizer loaded.
        # Scale reading and tokenizing with the students so they never wait (a task per
        # group of files at most: Ray Data warns of a pool larger than its inputs).
        compute=ray.data.TaskPoolStrategy(size=min(reading_tasks(sizing), max(1, len(groups)))),
    )
    # One call per block: a Score task is one call, so its rows are written (and their
    # chunks committed) as soon as it returns, and the actors share the calls.
    ds = ds.repartition(target_num_rows_per_block=1)
    return ds.map_batches(
        Score,
        batch_size=1,
        batch_format="pyarrow",
        fn_constructor_kwargs={
            "calling": calling,
            "pass_": pass_,
            "student": student,
            "cache": cache and cache[0].namespace,
        },
        # One call in flight per actor: a long call never holds short ones in its queue.
        compute=ray.data.ActorPoolStrategy(size=sizing.actors, max_tasks_in_flight_per_actor=1),
        # Ray Data's actor defaults restart a killed actor and retry its call.
        num_gpus=sizing.gpus_per_actor or None,
        num_cpus=sizing.cpus_per_actor,
    )


def cancel(graph) -> bool:
    """Stop a pass being iterated, its actors killed and its stream ended, so that the thread
    iterating it returns; whether there was a running execution to stop (before its actors
    are up there is none: the thread waits on them and nothing ends that wait). Ray Data has
    no public cancel for a stream in progress: its executor is the thread that runs the
    dataset's execution (tests/curate/test_graph.py fails if a Ray upgrade moves it)."""
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    mine = graph.get_dataset_id()
    running = [
        t
        for t in threading.enumerate()
        if isinstance(t, StreamingExecutor) and getattr(t, "_dataset_id", None) == mine
    ]
    for executor in running:
        executor.shutdown(force=True)
    return bool(running)


def pack(
    batch: pa.Table, *, reading: Reading, calling: Calling, pass_: Pass, student, cache=None
) -> Iterator[pa.Table]:
    """CPU stage, one group of input files per task: their rows read (`read_files`), looked
    up in the cache, tokenized (`Tokenize`, loaded at the first miss: a night of hits loads
    nothing) and packed into calls by estimated tokens (a larger row goes alone). A call is
    emitted as one row holding its rows as Arrow IPC bytes; cache hits are written here,
    through the sink, and only their counts flow on: a night of hits moves no rows between
    processes."""
    setup_logs(calling.verbose)
    sink, lookup = Sink(pass_), _lookup(pass_, calling, cache)
    pending, tokens = [], 0
    hits, hit_tokens = [], 0
    files = [f for row in batch.column("files").to_pylist() for f in json.loads(row)]
    for piece in read_files(files, reading):
        if lookup is not None:
            found, piece = lookup.split(piece)
            if found.num_rows:
                hits.append(found.append_column("reused", pa.array([True] * found.num_rows)))
                hit_tokens += pc.sum(found.column("n_response_tokens")).as_py()
            if hit_tokens >= HIT_CALL_TOKENS:
                yield _write_hits(sink, hits)
                hits, hit_tokens = [], 0
            if not piece.num_rows:
                continue
        piece = piece.append_column("reused", pa.array([False] * piece.num_rows))
        piece = _tokenize(student, calling)(piece)
        start = 0
        for i, cost in enumerate(row_costs(piece, calling.score.windows)):
            if tokens and tokens + cost > calling.call_tokens:
                pending.append(piece.slice(start, i - start))
                yield call_row(pending, tokens)
                pending, tokens, start = [], 0, i
            tokens += cost
        pending.append(piece.slice(start))
    if any(t.num_rows for t in pending):
        yield call_row(pending, tokens)
    if hits:
        yield _write_hits(sink, hits)


# What a reading process keeps between its tasks, the last of each kind: kind -> (what it
# was made from, it). A process Ray reuses for the next task finds it there.
_HELD: dict[str, tuple] = {}


def _lookup(pass_: Pass, calling: Calling, cache) -> Lookup | None:
    """The cache's Lookup for this pass (`cache`: the view and its index's object ref, new
    with every pass): what it has read for one task serves the next."""
    if cache is None:
        return None
    key = (cache, list(pass_.results), calling.max_response_tokens)
    if _HELD.get("lookup", (None,))[0] != key:
        _HELD["lookup"] = (key, Lookup.open(cache, key[1], key[2]))
    return _HELD["lookup"][1]


def _tokenize(student: StudentIdentity, calling: Calling) -> Tokenize:
    """The tokenizer of `student`, loaded once per process (transformers and a tokenizer
    take seconds); reused, the student's files are checked again: still those identified."""
    key = (student, calling.score, calling.max_response_tokens)
    if _HELD.get("tokenize", (None,))[0] == key:
        verify(student)
    else:
        score = student.pinned(calling.score)
        tokenizer = checked_load(student, lambda: load_tokenizer(score))
        _HELD["tokenize"] = (key, Tokenize(score, calling.max_response_tokens, tokenizer))
    return _HELD["tokenize"][1]


def _write_hits(sink: Sink, hits: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(hits)
    call_id = uuid.uuid4().hex[:12]
    n = table.num_rows
    for name in CALL_COSTS:  # hits cost the student nothing
        table = table.append_column(name, pa.array([0] * n, pa.int64()))
    table = table.append_column("call_id", pa.array([call_id] * n, pa.string()))
    table = table.append_column("est_tokens", pa.array([0] * n, pa.int64()))
    counts = sink.write(table, f"cache {actor_name()}")  # hits: which node served them
    return call_row([counts], 0, cached=True, call_id=call_id)


class Score:
    """GPU (or CPU) stage: one student per actor, loaded in the background from the start
    (the actor takes calls at once: a night of cache hits never waits for a student); scores
    one call (`Calls`) and writes it through the sink, returning the per-chunk counts."""

    def __init__(
        self, calling: Calling, pass_: Pass, student: StudentIdentity, cache: str | None = None
    ):
        setup_logs(calling.verbose)
        self.calling, self.pass_, self.student = calling, pass_, student
        self.sink = Sink(pass_, cache)
        self._loading = ThreadPoolExecutor(1).submit(self._load)
        self.name = actor_name()  # which student scored a call (the manifest's rows_per_actor)

    def _load(self) -> Calls:
        import torch

        calling = self.calling
        if calling.gpus_per_actor == 0 and calling.score.device in ("cpu", "auto"):
            # Ray sets OMP threads to the actor's (fractional) CPUs; use the machine's share.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // calling.actors))
        from ...scoring.api import Scorer  # torch: only in the actors that score

        score = self.student.pinned(calling.score)
        return Calls(checked_load(self.student, lambda: Scorer(score)), self.pass_)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if batch.column("cached")[0].as_py():
            return read_call(batch)  # hits, written by `pack`: their counts
        calls = self._loading.result()  # loaded (a load that failed raises here)
        return self.sink.write(calls(batch), self.name)


class Calls:
    """A call (see `pack`) -> its rows with the pass's results (`pass_.method` of the
    scorer), or reasons: a call that fails whole is scored row by row, so one row that keeps
    failing is rejected, not its call."""

    def __init__(self, scorer, pass_: Pass):
        self.scorer, self.pass_ = scorer, pass_
        self.method = partial(pass_.method.of(scorer), **pass_.options)

    def __call__(self, batch: pa.Table) -> pa.Table:
        table = read_call(batch)
        items = prepared_items(table)
        before = {name: self.scorer.stats[stat] for name, stat in CALL_COSTS.items()}
        try:
            results = self.method(items)
        except Exception:  # noqa: BLE001 - find the row that fails, keep the others
            results = [self._score_one(item) for item in items]
        scores = pa.Table.from_pylist(results, schema=self.pass_.schema)
        table = set_reasons(
            table.drop_columns(list(TOKEN_COLUMNS)), [r.get("error") for r in results]
        )
        for name in self.pass_.results:
            table = table.append_column(name, scores.column(name))
        for name, stat in CALL_COSTS.items():  # the call's, on its first row
            spent = self.scorer.stats[stat] - before[name]
            column = ([spent] + [0] * (table.num_rows - 1))[: table.num_rows]
            table = table.append_column(name, pa.array(column, pa.int64()))
        for name in ("call_id", "est_tokens"):  # each row says which call scored it
            value = batch.column(name)[0]
            table = table.append_column(
                name, pa.array([value.as_py()] * table.num_rows, value.type)
            )
        return table

    def _score_one(self, item) -> dict:
        try:
            return self.method([item])[0]
        except Exception as err:  # noqa: BLE001
            return {"status": "error", "error": f"scoring failed: {type(err).__name__}: {err}"}


def actor_name() -> str:
    """`<node id>/<host>:<pid>`: the Ray node (several may share a host) and the process."""
    import ray

    node = ray.get_runtime_context().get_node_id()[:12] if ray.is_initialized() else "-"
    return f"{node}/{socket.gethostname()}:{os.getpid()}"


def call_row(tables: list[pa.Table], tokens: int, cached: bool = False, call_id=None) -> pa.Table:
    """A call as one row: its rows as Arrow IPC bytes; `cached`: counts of hits written."""
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


def read_call(batch: pa.Table) -> pa.Table:
    with pa.ipc.open_stream(batch.column("call")[0].as_py()) as reader:
        return reader.read_all()
