"""Input file formats: which format a file is, its columns, and its rows in chunks.

Parquet is read batch by batch; Arrow IPC (Feather v2 files, and the `data-*.arrow` streams
of a `datasets` `save_to_disk` directory) record batch by record batch; JSONL (optionally
gzipped) line by line, where a line that is not valid UTF-8 or JSON becomes an error string
for that row and the other rows go on.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..storage import filesystem

READ_CHUNK_ROWS = 256  # rows per chunk read from a file
GZIP_MAGIC = b"\x1f\x8b"
FEATHER_V1 = b"FEA1"
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark
BLANK = BOM + b" \t\r\n"
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
    """(schema, record batches) of an Arrow IPC file or stream, the `columns` of it. A
    Feather v1 file (an older layout than Arrow IPC) is read whole."""
    fs, path = filesystem(uri)
    with fs.open_input_file(path) as f:
        if f.read(4) == FEATHER_V1:
            f.seek(0)
            table = _feather_v1(f)
            schema, batches = table.schema, iter(table.to_batches())
        else:
            f.seek(0)
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


def _feather_v1(f) -> pa.Table:
    import warnings

    import pyarrow.feather as feather

    with warnings.catch_warnings():  # deprecated by Arrow, still read
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return feather.read_table(f)
        except (pa.ArrowNotImplementedError, NotImplementedError) as err:
            raise ValueError(
                f"a Feather v1 file this pyarrow cannot read ({err}): write it again as "
                "Feather v2 (pyarrow.feather.write_feather(table, path, version=2))"
            ) from None


class FileInfo(NamedTuple):
    """What planning needs of an input file: its column names (None: it has no row), its
    rows (`exact`: counted, else estimated from the lines per byte), and the first values
    of some columns (`sample`: column -> values; `types`: column -> the type the file
    declares, or the Python types of the sampled values)."""

    names: list[str] | None
    rows: int
    exact: bool
    sample: dict
    types: dict


def input_columns(uri: str, fmt: str = "auto", sample: tuple = (), sample_rows: int = 1000):
    """The `FileInfo` of an input file: the Parquet footer's schema and count; Arrow's schema
    and batch lengths; for JSONL, the keys of the first `sample_rows` records (writers leave
    out null fields, so one record is not enough). `sample`: columns whose first
    `sample_rows` values to return."""
    fs, path = filesystem(uri)
    kind = file_format(uri, fmt)
    if kind == "parquet":
        with fs.open_input_file(path) as f:
            footer = pq.ParquetFile(f)
            names = footer.schema_arrow.names
            wanted = [c for c in sample if c in names]
            values = _first_values(footer.iter_batches(sample_rows, columns=wanted), wanted)
            types = {c: str(footer.schema_arrow.field(c).type) for c in wanted}
            return FileInfo(names, footer.metadata.num_rows, True, values, types)
    if kind == "arrow":
        with arrow_batches(uri) as (schema, batches):
            wanted = [c for c in sample if c in schema.names]
            first = next(batches, None)
            rows = 0 if first is None else first.num_rows + sum(b.num_rows for b in batches)
            values = _first_values(iter([first] if first else []), wanted)
            types = {c: str(schema.field(c).type) for c in wanted}
        return FileInfo(schema.names if rows else None, rows, True, values, types)
    size = fs.get_file_info(path).size or 0
    keys: dict[str, None] = {}
    values: dict[str, list] = {c: [] for c in sample}
    seen = 0
    with fs.open_input_stream(path, compression=None) as f:
        counted = _Counted(f)
        rows = json_rows(_chunks(counted))
        for _, rec in rows:
            rec = _parse_line(rec) if isinstance(rec, bytes) else rec
            if isinstance(rec, dict):
                keys.update(dict.fromkeys(rec))
                for c in sample:
                    if c in rec:
                        values[c].append(rec[c])
            seen += 1
            if seen >= sample_rows:
                break
        else:
            types = {c: sorted({type(v).__name__ for v in values[c]}) for c in values}
            return FileInfo(list(keys) if seen else None, seen, True, values, types)
        lines = rows.lines
    types = {c: sorted({type(v).__name__ for v in values[c]}) for c in values}
    estimate = round(lines * size / max(counted.n, 1))
    return FileInfo(list(keys), max(estimate, seen), False, values, types)


def _first_values(batches, columns: list[str]) -> dict[str, list]:
    first = next(batches, None)
    if first is None or not columns:
        return {c: [] for c in columns}
    return {c: first.column(c).to_pylist() for c in columns}


class _Counted:
    """A stream that counts the bytes read from it."""

    def __init__(self, f):
        self.f, self.n = f, 0

    def read(self, size: int) -> bytes:
        data = self.f.read(size)
        self.n += len(data)
        return data


def _chunks(f) -> Iterator[bytes]:
    """The bytes of a file, gunzipped when they are gzip (by their first bytes, whatever
    the file is named), by streaming zlib: a truncated file still gives every byte before
    the cut, then raises."""
    chunk = f.read(1 << 20)
    if not chunk.startswith(GZIP_MAGIC):
        while chunk:
            yield chunk
            chunk = f.read(1 << 20)
        return
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    while chunk:
        yield d.decompress(chunk)
        while d.unused_data:  # a multi-member gzip file
            rest, d = d.unused_data, zlib.decompressobj(16 + zlib.MAX_WBITS)
            yield d.decompress(rest)
        chunk = f.read(1 << 20)
    if not d.eof:
        raise EOFError("the gzip stream ends early (a truncated file?)")


class json_rows:
    """(row index, line bytes | parsed record) of JSON text: JSON Lines (a row per line,
    blank lines counted but not yielded, each line parsed by the caller, so rows not wanted
    are never parsed), or a file that is one JSON array of objects (read whole; a row per
    element). `lines`: newlines in the bytes taken from `chunks` so far (an estimate of the
    rows from the bytes read)."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.lines = chunks, 0

    def _counted(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.lines += chunk.count(b"\n")
            yield chunk

    def __iter__(self):
        chunks, head = self._counted(), b""
        for chunk in chunks:  # up to the first byte that is not blank
            head += chunk
            if head.lstrip(BLANK):
                break
        if head.lstrip(BLANK).startswith(b"["):
            yield from _array_rows(head + b"".join(chunks))
            return
        for index, line in enumerate(_lines(itertools.chain([head], chunks))):
            if line.strip():
                yield index, line


def _array_rows(data: bytes):
    try:
        items = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"a file that starts with '[' is not a whole JSON array ({err})") from None
    for index, item in enumerate(items):
        yield index, item if isinstance(item, dict) else "array element is not a JSON object"


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    buf = b""
    first = True
    for chunk in chunks:
        if first and chunk:
            chunk = chunk.removeprefix(BOM)
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
        if picked is not None and not len(picked):
            return
        for batch in _batches(uri, kind, columns, chunk_rows):
            rows = _rows(batch, index, picked)
            index += batch.num_rows
            if rows:
                yield rows
            if picked is not None and index > picked[-1]:
                return  # every row asked for: the rest is never read
        return
    fs, path = filesystem(uri)
    with fs.open_input_stream(path, compression=None) as f:  # gzip by its bytes, not its name
        out, left = [], None if only is None else len(only)
        try:
            for index, row in json_rows(_chunks(f)):
                if only is not None and index not in only:
                    continue
                out.append((index, _parse_line(row) if isinstance(row, bytes) else row))
                if len(out) >= chunk_rows:
                    yield out
                    out = []
                if left is not None:
                    left -= 1
                    if not left:  # every row asked for: the rest is never read
                        break
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
