"""Input file formats: which format a file is, its columns, and its rows in chunks.

Parquet is read batch by batch; Arrow IPC (Feather v2 files, and the `data-*.arrow` streams
of a `datasets` `save_to_disk` directory) record batch by record batch; JSONL (optionally
gzipped) line by line, where a line that is not valid UTF-8 or JSON becomes an error string
for that row and the other rows go on.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .storage import filesystem

READ_CHUNK_ROWS = 256  # rows per chunk read from a file
ARROW_SUFFIXES = (".arrow", ".feather", ".ipc")
INPUT_SUFFIXES = (
    ".parquet",
    *ARROW_SUFFIXES,
    ".jsonl",
    ".jsonl.gz",
    ".json",
    ".json.gz",
    ".ndjson",
)
FORMATS = ("auto", "parquet", "arrow", "jsonl")


def file_format(uri: str, fmt: str = "auto") -> str:
    """`fmt`, or by the file's name: Parquet, Arrow IPC, else JSONL."""
    if fmt != "auto":
        return fmt
    name = uri.rsplit("/", 1)[-1]
    if name.endswith(".parquet") or ".parquet" in name:
        return "parquet"
    return "arrow" if name.endswith(ARROW_SUFFIXES) else "jsonl"


@contextmanager
def arrow_batches(uri: str, columns: list[str] | None = None):
    """(schema, record batches) of an Arrow IPC file or stream, the `columns` of it."""
    fs, path = filesystem(uri)
    with fs.open_input_file(path) as f:
        try:
            reader = pa.ipc.open_file(f)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:  # not the file format: the stream format (`datasets`)
            f.seek(0)
            reader = pa.ipc.open_stream(f)
            batches = iter(reader)
        schema = reader.schema
        if columns is not None:
            keep = [c for c in columns if c in schema.names]
            batches = (b.select(keep) for b in batches)
        yield schema, batches


def input_columns(uri: str, fmt: str = "auto", sample_rows: int = 1000):
    """(column names, rows, exact) of an input file: the Parquet footer's schema and count;
    for JSONL, the keys of the first `sample_rows` records (writers leave out null fields,
    so one record is not enough) and the rows estimated from the lines per byte read so far
    (exact when the sample reached the end). Names are None for a file without a row (it
    becomes a reject row, not an error)."""
    fs, path = filesystem(uri)
    kind = file_format(uri, fmt)
    if kind == "parquet":
        with fs.open_input_file(path) as f:
            footer = pq.ParquetFile(f)
            return footer.schema_arrow.names, footer.metadata.num_rows, True
    if kind == "arrow":
        with arrow_batches(uri, []) as (schema, batches):
            rows = sum(b.num_rows for b in batches)  # batch lengths: no column is read
        return (schema.names if rows else None), rows, True
    size = fs.get_file_info(path).size or 0
    keys: dict[str, None] = {}
    seen = lines = 0
    with fs.open_input_stream(path, compression=None) as f:
        counted = _Counted(f)
        buf = b""
        for chunk in _chunks(counted, path):
            lines += chunk.count(b"\n")
            buf += chunk
            *complete, buf = buf.split(b"\n")
            for line in complete + ([buf] if counted.eof else []):
                if line.strip():
                    rec = _parse_line(line.removeprefix(b"\xef\xbb\xbf"))
                    keys.update(dict.fromkeys(rec) if isinstance(rec, dict) else {})
                    seen += 1
            if seen >= sample_rows:
                break
        else:
            if buf.strip():  # a last line without a newline
                rec = _parse_line(buf)
                keys.update(dict.fromkeys(rec) if isinstance(rec, dict) else {})
                seen += 1
            return (list(keys) if seen else None), seen, True
    return list(keys), round(lines * size / max(counted.n, 1)), False


class _Counted:
    """A stream that counts the bytes read from it, and sees its end."""

    def __init__(self, f):
        self.f, self.n, self.eof = f, 0, False

    def read(self, size: int) -> bytes:
        data = self.f.read(size)
        self.n += len(data)
        self.eof = self.eof or not data
        return data


def _chunks(f, path: str) -> Iterator[bytes]:
    """The bytes of a file, gunzipped when it ends in .gz (by streaming zlib, so a truncated
    file still gives every byte before the cut, then raises)."""
    if not path.endswith(".gz"):
        while chunk := f.read(1 << 20):
            yield chunk
        return
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    while chunk := f.read(1 << 20):
        yield d.decompress(chunk)
        while d.unused_data:  # a multi-member gzip file
            rest, d = d.unused_data, zlib.decompressobj(16 + zlib.MAX_WBITS)
            yield d.decompress(rest)
    if not d.eof:
        raise EOFError("the gzip stream ends early (a truncated file?)")


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    buf = b""
    first = True
    for chunk in chunks:
        if first and chunk:
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
            first = False
        buf += chunk
        *lines, buf = buf.split(b"\n")
        yield from lines
    if buf:
        yield buf


def read_rows(
    uri: str, fmt: str, columns: list[str] | None, chunk_rows: int, only=None
) -> Iterator[list]:
    """Yield lists of (row index, record dict | error string) from one file, chunk by chunk;
    with `only` (row indices), just those rows: the others are read past, never converted
    to Python (nor parsed, in JSONL).

    A JSONL line that is not valid UTF-8 or JSON yields an error string for that row; the
    other rows go on. An unreadable file raises (the caller rejects the file).
    """
    kind = file_format(uri, fmt)
    if kind in ("arrow", "parquet"):
        picked = None if only is None else np.array(sorted(only), dtype=np.int64)
        index = 0
        for batch in _batches(uri, kind, columns, chunk_rows):
            rows = _rows(batch, index, picked)
            index += batch.num_rows
            if rows:
                yield rows
        return
    fs, path = filesystem(uri)
    with fs.open_input_stream(path, compression=None) as f:  # no guessing by extension
        out, index = [], 0
        try:
            for line in _lines(_chunks(f, path)):
                if line.strip() and (only is None or index in only):
                    out.append((index, _parse_line(line)))
                    if len(out) >= chunk_rows:
                        yield out
                        out = []
                index += 1
        except Exception:  # rows read before a failure are kept; the caller sees it after
            if out:
                yield out
            raise
        if out:
            yield out


def _batches(uri: str, kind: str, columns, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """A columnar file's record batches of at most `chunk_rows` rows, the `columns` of it."""
    if kind == "arrow":
        with arrow_batches(uri, columns) as (_, batches):
            for batch in batches:
                for start in range(0, batch.num_rows, chunk_rows):
                    yield batch.slice(start, chunk_rows)
        return
    fs, path = filesystem(uri)
    with fs.open_input_file(path) as f:
        pfile = pq.ParquetFile(f)
        names = pfile.schema_arrow.names
        wanted = [c for c in columns if c in names] if columns is not None else None
        yield from pfile.iter_batches(batch_size=chunk_rows, columns=wanted)


def _rows(batch: pa.RecordBatch, index: int, picked: np.ndarray | None) -> list:
    """(row index, record) of a batch whose first row is row `index`; only the `picked`
    indices (sorted) when given."""
    if picked is None:
        return list(enumerate(batch.to_pylist(), start=index))
    lo, hi = np.searchsorted(picked, [index, index + batch.num_rows])
    at = picked[lo:hi]
    return list(zip(at.tolist(), batch.take(at - index).to_pylist())) if len(at) else []


def _parse_line(line: bytes) -> dict | str:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"line is not valid UTF-8 ({err.reason} at byte {err.start})"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        return f"line is not valid JSON ({err.msg} at column {err.colno})"
    return record if isinstance(record, dict) else "line is not a JSON object"
