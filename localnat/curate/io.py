"""Filesystems, input discovery, reading files into row batches, small JSON outputs.

Credentials come only from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_ENDPOINT_URL, AWS_REGION) or the cloud identity; `redact` strips
them from anything we print or write.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

INPUT_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")
_SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
)
# user:secret@ after a scheme; a secret may hold '/' (AWS secret keys do)
_URI_CREDENTIALS = re.compile(r"(?<=://)(?:[^/@\s]+|[^@\s/]*:[^@\s]*)@")
# key:secret@bucket where a library dropped the scheme (an S3 "bucket" name in an error)
_BARE_CREDENTIALS = re.compile(r"(?<![\w/.-])[^\s/@:'\"]+:[^\s/@'\"]+@")


def redact(text: str) -> str:
    """Remove credentials (env secrets, user:pass@ in URIs) from a string."""
    text = _URI_CREDENTIALS.sub("***@", str(text))
    text = _BARE_CREDENTIALS.sub("***@", text)
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path, file://, s3:// or gs:// URI. Keys are
    opaque: `#`, `?` and spaces are part of the name, never a fragment or a query."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    scheme = scheme.lower()
    if scheme == "s3":
        return _s3(), rest
    if scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem(), rest
    if scheme == "file":
        return pafs.LocalFileSystem(), os.path.abspath(unquote(rest))
    raise ValueError(f"unsupported URI scheme {scheme!r} in {redact(uri)}")


def _s3() -> pafs.S3FileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs = {}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kwargs["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        kwargs["session_token"] = os.environ.get("AWS_SESSION_TOKEN")
    # Transient errors (throttling, 5xx, dropped connections) retried with backoff.
    kwargs["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=8)
    return pafs.S3FileSystem(allow_bucket_creation=True, **kwargs)


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *[p.strip("/") for p in parts]])


def list_inputs(uris: list[str], exclude: str | None = None) -> list[tuple[str, str]]:
    """Expand files, directories and globs into sorted (input file URI, root) pairs; the root
    is the directory that hive partitions (`teacher=x/`) are read relative to. Files under
    `exclude` (the output) are left out."""
    found: dict[str, str] = {}
    for uri in uris:
        fs, path = filesystem(uri)
        remote = "://" in uri and not uri.startswith("file://")
        scheme = uri.split("://", 1)[0] + "://" if remote else ""
        to_uri = lambda p, s=scheme: s + p  # noqa: E731
        if any(ch in path for ch in "*?["):
            root = path[: min(path.find(ch) for ch in "*?[" if ch in path)].rsplit("/", 1)[0]
            selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
            matches = [
                i.path
                for i in fs.get_file_info(selector)
                if i.type == pafs.FileType.File
                and _glob_match(i.path, path)
                and not _hidden(i.path, root)
            ]
            if not matches:
                raise FileNotFoundError(f"no input file matches {redact(uri)}")
            found.update({to_uri(m): to_uri(root) for m in matches})
            continue
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            found[to_uri(path)] = to_uri(path.rsplit("/", 1)[0])
        elif info.type == pafs.FileType.Directory:
            selector = pafs.FileSelector(path, recursive=True)
            files = [
                i.path
                for i in fs.get_file_info(selector)
                if i.type == pafs.FileType.File
                and i.path.endswith(INPUT_SUFFIXES)
                and not _hidden(i.path, path)
            ]
            if not files:
                raise FileNotFoundError(f"no Parquet or JSONL files under {redact(uri)}")
            found.update({to_uri(f): to_uri(path) for f in files})
        else:
            raise FileNotFoundError(f"input not found: {redact(uri)}")
    if exclude:
        fs_out, out_path = filesystem(exclude)
        out_path = out_path.rstrip("/") + "/"
        inside = lambda u: (  # noqa: E731
            type(filesystem(u)[0]) is type(fs_out) and filesystem(u)[1].startswith(out_path)
        )
        found = {u: r for u, r in found.items() if not inside(u)}
        if not found:
            raise FileNotFoundError("no input file outside the output directory")
    return sorted(found.items())


def _glob_match(path: str, pattern: str) -> bool:
    """Shell-like: `*` and `?` never cross a `/`, so `dir/*.parquet` is one level deep."""
    parts, pats = path.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(map(fnmatch.fnmatchcase, parts, pats))


def _hidden(path: str, root: str) -> bool:
    return any(p.startswith((".", "_")) for p in path[len(root) :].split("/") if p)


def hive_columns(uri: str, root: str) -> dict[str, str]:
    """`root/teacher=qwq/split=a/part-0.parquet` -> {"teacher": "qwq", "split": "a"}."""
    rel = uri[len(root) :].strip("/").split("/")[:-1]
    pairs = (unquote(p).split("=", 1) for p in rel if "=" in p)
    return {k: v for k, v in pairs if k}


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


def stable_id(*parts) -> int:
    """A positive int64 from the parts: stable across runs, machines and Python versions."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


def write_table(table: pa.Table, uri: str) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs, compression="zstd")


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode())


def write_bytes(uri: str, data: bytes) -> None:
    """Write a small object whole: an object store's put is atomic; a local file is written
    aside and renamed into place, so a reader never sees half of it."""
    fs, path = filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    with fs.open_output_stream(path) as f:
        f.write(data)


def read_text(uri: str) -> str | None:
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def list_files(uri: str) -> list[str]:
    """Files directly or recursively under a directory URI ([] when it does not exist)."""
    fs, path = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    base = uri.rstrip("/")
    return sorted(
        base + i.path[len(path.rstrip("/")) :] for i in infos if i.type == pafs.FileType.File
    )


def delete(uri: str) -> None:
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        fs.delete_file(path)
    elif info.type == pafs.FileType.Directory:
        fs.delete_dir(path)


def read_parquet_dir(uri: str, columns: list[str] | None = None) -> pa.Table | None:
    return read_parquet_files([f for f in list_files(uri) if f.endswith(".parquet")], columns)


def read_parquet_files(
    uris: list[str], columns: list[str] | None = None, each: Callable | None = None
) -> pa.Table | None:
    """The given Parquet files as one table (read in parallel: object stores are slow per
    call); `each` maps every file's table before they are joined (a filter keeps the
    memory that of the rows kept); None for no file."""
    if not uris:
        return None

    def read(uri):
        fs, path = filesystem(uri)
        table = pq.read_table(path, filesystem=fs, columns=columns)
        return table if each is None else each(table)

    with ThreadPoolExecutor(16) as pool:
        tables = list(pool.map(read, sorted(uris)))
    return pa.concat_tables(tables, promote_options="permissive")


def file_version(uri: str, hash_below: int = 8 << 20) -> dict:
    """What changes when a file is edited: size and modification time (the store's
    LastModified on S3), plus a content hash for files under `hash_below` bytes, whose edits
    may keep both (a tool that preserves mtimes)."""
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    version = {"size": info.size, "mtime_ns": info.mtime_ns}
    if info.size is not None and info.size < hash_below:
        with fs.open_input_stream(path, compression=None) as f:
            version["blake2b"] = hashlib.blake2b(f.read(), digest_size=16).hexdigest()
    return version
