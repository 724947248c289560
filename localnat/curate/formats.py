"""Input file formats: which format a file is, its columns, and its rows in chunks.

Parquet is read batch by batch; JSONL (optionally gzipped) line by line, where a line that is
not valid UTF-8 or JSON becomes an error string for that row and the other rows go on.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator

import pyarrow.parquet as pq

from .storage import filesystem

READ_CHUNK_ROWS = 256  # rows per chunk read from a file
INPUT_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")


def file_format(uri: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    return (
        "parquet" if uri.endswith(".parquet") or ".parquet" in uri.rsplit("/", 1)[-1] else "jsonl"
    )


def input_columns(uri: str, fmt: str = "auto", sample_rows: int = 1000):
    """(column names, row count or None) of an input file: the Parquet footer's schema and
    count, or the keys of the first `sample_rows` JSONL records (writers leave out null
    fields, so one record is not enough) and no count. Names are None for a file without a
    row (it becomes a reject row, not an error)."""
    fs, path = filesystem(uri)
    if file_format(uri, fmt) == "parquet":
        with fs.open_input_file(path) as f:
            footer = pq.ParquetFile(f)
            return footer.schema_arrow.names, footer.metadata.num_rows
    keys: dict[str, None] = {}
    seen = 0
    for rows in read_rows(uri, fmt, None, 256):
        for _, rec in rows:
            if isinstance(rec, dict):
                keys.update(dict.fromkeys(rec))
            seen += 1
        if seen >= sample_rows:
            break
    return (list(keys) if seen else None), None


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


def read_rows(uri: str, fmt: str, columns: list[str] | None, chunk_rows: int) -> Iterator[list]:
    """Yield lists of (row index, record dict | error string) from one file, chunk by chunk.

    A JSONL line that is not valid UTF-8 or JSON yields an error string for that row; the
    other rows go on. An unreadable file raises (the caller rejects the file).
    """
    fs, path = filesystem(uri)
    if file_format(uri, fmt) == "parquet":
        with fs.open_input_file(path) as f:
            pfile = pq.ParquetFile(f)
            names = pfile.schema_arrow.names
            wanted = [c for c in columns if c in names] if columns is not None else None
            index = 0
            for batch in pfile.iter_batches(batch_size=chunk_rows, columns=wanted):
                rows = batch.to_pylist()
                yield list(enumerate(rows, start=index))
                index += len(rows)
        return
    with fs.open_input_stream(path, compression=None) as f:  # no guessing by extension
        out, index = [], 0
        try:
            for line in _lines(_chunks(f, path)):
                if line.strip():
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
