"""Reading a pass's rows: each input file in order, validated, in commit chunks (run/outputs.py),
so a large file commits as it goes and a resumed run reads past the chunks already done."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import pyarrow as pa

from ..settings import Reading
from .formats import READ_CHUNK_ROWS, read_rows
from .plan import hive_columns
from .records import file_reject, normalize

# What a file's own content raises (corrupt Parquet, a truncated gzip, undecodable bytes):
# the file is rejected. Anything else (a storage error) fails the task, which Ray retries
# and a rerun resumes: a transient error must never commit a file cut short.
BAD_FILE = (ValueError, EOFError, zlib.error, pa.ArrowException)
# Arrow raises a plain OSError for a file cut short (an IPC stream's last message): by
# these words it is the content's, read again it fails again.
CUT_SHORT = ("Expected to be able to read", "Expected to read", "Unexpected end of stream")


def content_error(err: BaseException) -> bool:
    """Whether a read failed on the file's content (its rows from there on are a reject),
    not on the storage (the task fails and is retried)."""
    if isinstance(err, OSError):
        return any(words in str(err) for words in CUT_SHORT)
    return isinstance(err, BAD_FILE)


def read_files(files: list[dict], reading: Reading) -> Iterator[pa.Table]:
    """Read + validate `files` (file_index, uri, root, skip, rows each), in order, in commit
    chunks of `reading.commit_rows` rows (see `Chunker`). Chunks in `skip` were committed by an
    earlier attempt: their rows are read past, not emitted. An unreadable file (or the
    unreadable rest of one) becomes one reject row after the rows read. With `rows` (racing's
    exact pass) only those rows are read, chunked among themselves."""
    step = [reading.step_column] if reading.step_column else []
    wanted = [*reading.columns.values(), *step]
    for item in files:
        index, uri = item["file_index"], item["uri"]
        only = None if item.get("rows") is None else set(item["rows"])
        hive = hive_columns(uri, item["root"])
        chunker = Chunker(
            reading.commit_rows,
            set(item.get("skip") or ()),
            lambda rows, uri=uri, index=index, hive=hive: _normalize_piece(
                rows, uri, index, hive, reading
            ),
        )
        try:
            for rows in read_rows(uri, reading.input_format, wanted, READ_CHUNK_ROWS, only):
                for row in rows:
                    yield from chunker.add(row)
        except (*BAD_FILE, OSError) as err:  # a corrupt file is a reject row; I/O is raised
            if not content_error(err):
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


def _normalize_piece(rows: list, uri: str, index: int, hive: dict, reading) -> pa.Table:
    """Rows of one file -> WORK_SCHEMA; a row index of None is the file's reject row."""
    tables, run = [], []
    for row in rows:
        if row[0] is None:
            if run:
                tables.append(normalize(run, uri, index, hive, reading))
                run = []
            tables.append(file_reject(uri, index, row[1]))
        else:
            run.append(row)
    if run:
        tables.append(normalize(run, uri, index, hive, reading))
    return pa.concat_tables(tables)


def _with_chunk(table: pa.Table, chunk: int, rows: int | None, last: bool) -> pa.Table:
    n = table.num_rows
    tail = lambda v: [None] * (n - 1) + [v]  # noqa: E731 - only the chunk's last row says
    table = table.append_column("chunk", pa.array([chunk] * n, pa.int32()))
    table = table.append_column("chunk_rows", pa.array(tail(rows), pa.int64()))
    return table.append_column("last_chunk", pa.array(tail(last if rows else None), pa.bool_()))
