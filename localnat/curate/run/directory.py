"""A run owns its directory, OUTPUT/RUN_ID/: it holds the lease, checks the identity a
resume must match (resume.py), executes scoring passes, committing each chunk of rows as
soon as all its rows are written (the protocol and every write: outputs.py), and completes
with what the reports return, the manifest last. Outside its directory it touches only the
score cache it is given (`ScoreCache`: the namespaces' settings, the reader's lease; the
sink appends, and the job compacts at the end).

    _run.json _lease/ _done/   identity, lease, the scores pass's markers
    scores/ rejects/           the scores pass's parts
    race/                      racing's exact pass: its own scores/, rejects/, _done/, _pass.json
    teachers.* README.md       the reports, and manifest.json last (report/manifest.py)
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial

from ...logs import LOG, native_noise_dropped
from ..cache.score_cache import ScoreCache
from ..inputs.plan import InputPlan
from ..job_config import CurateConfig
from ..storage import join
from .identity import StudentIdentity
from .lease import Lease
from .nodes import check_every_node_sees, witnesses
from .outputs import (
    commit_chunk,
    committed_chunks,
    committed_parts,
    completed_files,
    merge_parts,
    prepare_overwrite,
    remove,
    remove_uncommitted,
    start,
    start_pass,
    write,
)
from .passes import Pass
from .progress import Progress, interruptible, start_ray, uninterrupted, unwrapped
from .resume import check_same_run, check_unchanged, input_versions, run_identity
from .sink import CALL_COSTS, shared_parts
from .student_checks import wait_for_gpus


@dataclass
class Executed:
    """A pass's committed chunks (of every attempt) and their scores/ parts (URIs), and what
    this attempt did: response tokens the student scored (cache hits not counted), calls
    (id -> rows, estimated tokens, actor), what an earlier attempt had committed, and its
    seconds."""

    chunks: dict
    parts: list[str] = field(default_factory=list)
    tokens: int = 0
    calls: dict = field(default_factory=dict)
    resumed: dict = field(default_factory=dict)
    seconds: float = 0.0


class Run:
    """`with Run(cfg, run_dir, plan, student, cache) as run: run.execute(pass_)`; `cache`
    the score cache its passes read and add to (None: none)."""

    def __init__(
        self,
        cfg: CurateConfig,
        run_dir: str,
        plan: InputPlan,
        student: StudentIdentity,
        cache: ScoreCache | None,
    ):
        self.cfg, self.dir, self.plan, self.student = cfg, run_dir, plan, student
        self.cache = cache
        self.id = run_dir.rstrip("/").rsplit("/", 1)[-1]
        self._lease = Lease(run_dir)

    def __enter__(self) -> Run:
        self._lease.__enter__()
        try:
            if self.cfg.overwrite:
                prepare_overwrite(self.dir)
            identity = run_identity(self.plan.files, self.cfg, self.student)
            if not check_same_run(self.dir, identity):
                start(self.dir, identity)
            self.versions = input_versions(self.plan.files, identity)
        except BaseException:
            self._lease.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        return self._lease.__exit__(*exc)

    def complete(self, files: dict, manifest: dict) -> None:
        """The reports (name -> content; None: delete it), then the manifest, last: its
        presence marks the run complete."""
        for name, content in files.items():
            if content is None:
                remove(self.dir, name)
            else:
                write(self.dir, name, content)
        write(self.dir, "manifest.json", json.dumps(manifest, indent=2))
        LOG.info(f"run {self.id} complete")

    def reopen(self) -> None:
        """A complete run to be completed again (chosen otherwise): not complete meanwhile."""
        remove(self.dir, "manifest.json")

    @property
    def seen(self) -> dict:
        """What a node must read to write into this run's directory (`nodes.witnesses`)."""
        return witnesses({"output": self._lease})

    def execute(self, pass_: Pass) -> Executed:
        """Run `pass_` over the files it still lacks, in its place in the run's directory;
        every one complete when it returns."""
        started = time.time()
        pass_ = pass_.inside(self.dir)
        if pass_.identity is not None:
            start_pass(pass_.directory, pass_.identity)
        chunks = committed_chunks(pass_.directory)
        remove_uncommitted(pass_.directory, chunks)
        done = completed_files(chunks)
        files = [f for f in self.plan.files if pass_.rows is None or f[0] in pass_.rows]
        todo = [f for f in files if f[0] not in done]
        out = Executed(chunks, resumed={"files_resumed": len(done), "chunks_resumed": len(chunks)})
        LOG.info(
            f"run {self.id}, pass {pass_.name}: {len(files)} input files "
            f"({len(done)} already done), output {pass_.directory}"
        )
        if todo:
            out.tokens, out.calls = self._stream(pass_, todo, chunks)
        out.chunks = committed_chunks(pass_.directory)
        remove_uncommitted(pass_.directory, out.chunks)  # parts a lost worker may have left
        out.parts = [join(pass_.directory, p) for p in committed_parts(out.chunks, "scores/")]
        missing = sorted({i for i, _, _ in files} - completed_files(out.chunks))
        if missing:
            raise RuntimeError(f"input files not completed: {missing}; rerun to finish them")
        out.seconds = time.time() - started
        if todo:
            LOG.info(
                f"pass {pass_.name}: {len(todo)} files in {out.seconds:.1f} s "
                f"({out.tokens / out.seconds:.1f} response tokens/s)"
            )
        return out

    def _stream(self, pass_: Pass, todo, chunks) -> tuple[int, dict]:
        """The pass's Ray graph over `todo`; each chunk committed once all its rows are in."""
        cfg = self.cfg
        start_ray(cfg.sizing)
        wait_for_gpus(cfg.sizing)
        with ExitStack() as stack:
            cache, leases = None, {"output": self._lease}
            if self.cache:  # registered as its reader first: a compaction keeps what it reads
                reader = self.cache.reading(list(pass_.results), pass_.cache_tag)
                leases["cache"], cache = stack.enter_context(reader)
            # Before any actor writes: every node sees where they write, and so must any
            # node that joins later (its actors check, graph.py).
            pass_ = replace(pass_, seen=witnesses(leases))
            check_every_node_sees(pass_.seen)
            return self._graph(pass_, todo, chunks, cache)

    def _graph(self, pass_: Pass, todo, chunks, cache) -> tuple[int, dict]:
        from .graph import build, cancel  # Ray Data: only in a run that scores

        cfg = self.cfg
        skip: dict[int, list[int]] = {}
        for f, c in chunks:
            skip.setdefault(f, []).append(c)
        graph = build(
            pass_,
            todo,
            self.student,
            reading=cfg.reading,
            calling=cfg.calling,
            sizing=cfg.sizing,
            skip=skip,
            cache=cache,
            sizes=self.plan.sizes,
        )
        progress = Progress(len(todo), self._rows_left(pass_, todo, chunks), LOG.info)
        progress.exact = self.plan.exact or (
            pass_.rows is not None and None not in pass_.rows.values()
        )
        commits = _Commits(pass_.directory, todo, skip, progress, self.versions)
        stream = graph.iter_batches(batch_size=None, batch_format="pyarrow")
        with (
            native_noise_dropped(cfg.verbose),
            progress,
            interruptible(stream, stop=partial(cancel, graph)) as batches,
        ):
            try:
                for batch in batches:
                    commits.add(batch.to_pylist())
            except Exception as err:
                if unwrapped(err) is not err:
                    raise unwrapped(err) from None  # ours says what is wrong, in a line
                raise
        return commits.tokens, commits.calls

    def _rows_left(self, pass_: Pass, todo, chunks) -> int | None:
        """Rows this attempt has to do, for the progress line's ETA."""
        names = {i for i, _, _ in todo}
        done = sum(c["scored"] + c["rejected"] for (f, _), c in chunks.items() if f in names)
        if pass_.rows is None:
            return self.plan.rows_left(names, done) or None
        listed = [pass_.rows[i] for i in names]
        if None in listed:  # a whole file: its rows as the plan counts them
            whole = self.plan.rows_left([i for i in names if pass_.rows[i] is None])
            if whole is None:
                return None
            listed = [r for r in listed if r is not None] + [range(whole)]
        return max(sum(map(len, listed)) - done, 0) or None


class _Commits:
    """The driver's side of the commit protocol: per-chunk counts as the sink reports them;
    a chunk whose rows are all in is committed by its marker, its parts merged first when
    its rows came in several calls (at most one scores/ and one rejects/ part a chunk,
    `merge_parts`; never interrupted halfway), once its file is checked to be at the version
    the run started with (`versions`: a file rewritten meanwhile stops the run before its
    chunk counts). The parts a merge replaced are listed by no marker: the pass's cleanup
    deletes them."""

    def __init__(self, directory: str, todo, skip: dict, progress: Progress, versions: dict):
        self.directory, self.progress, self.versions = directory, progress, versions
        self.uris = {i: uri for i, uri, _ in todo}
        self.have = {i: set(skip.get(i, ())) for i, _, _ in todo}  # committed chunks per file
        self.ends: dict[int, int] = {}  # file -> its last chunk, once seen
        self.written: dict[tuple[int, int], dict] = {}
        self.totals: dict[tuple[int, int], tuple[int, bool]] = {}
        self.tokens = 0
        self.calls: dict[str, tuple[int, int, str]] = {}

    def add(self, rows: list[dict]) -> None:
        """One call's per-chunk counts; the chunks they complete committed."""
        complete = [key for key in map(self._count, rows) if key is not None]
        if not complete:
            return
        check_unchanged({f: self.uris[f] for f, _ in complete}, self.versions)
        for key in complete:
            # in this thread: merges in a pool of threads held Ray Data's dispatch back
            # (a short call waited for a long one), measured in tests/e2e/test_corpora.py
            record = {"last": self.totals[key][1], **self.written.pop(key)}
            with uninterrupted():
                record["parts"] = merge_parts(self.directory, key, record["parts"])
                record["committed_unix"] = time.time()
                commit_chunk(self.directory, *key, self.uris[key[0]], record)
            self._done(key, record["last"])

    def _count(self, row: dict) -> tuple[int, int] | None:
        """Add a chunk's counts; its key when all its rows are in."""
        key = (row["file_index"], row["chunk"])
        self.calls[row["call_id"]] = (row["call_rows"], row["call_tokens"], row["actor"])
        acc = self.written.setdefault(
            key,
            {"scored": 0, "rejected": 0, "reused": 0, "response_tokens": 0, "parts": []}
            | dict.fromkeys(CALL_COSTS, 0),
        )
        for name in acc:
            acc[name] += row[name]
        if row["shared"]:  # a whole chunk: one row, its parts shared with others
            acc["shared"] = shared_parts(row)
        self.tokens += row["response_tokens"]
        self.progress.add(row["scored"], row["rejected"], row["response_tokens"], row["reused"])
        if row["chunk_rows"] is not None:
            self.totals[key] = (row["chunk_rows"], bool(row["last"]))
        if key in self.totals and acc["scored"] + acc["rejected"] == self.totals[key][0]:
            return key
        return None

    def _done(self, key: tuple[int, int], last: bool) -> None:
        f, c = key
        self.have[f].add(c)
        if last:
            self.ends[f] = c
        if f in self.ends and len(self.have[f]) == self.ends[f] + 1:
            self.progress.done_files += 1
            del self.ends[f]
