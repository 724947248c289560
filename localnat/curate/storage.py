"""Object stores and local files behind one set of calls: local paths, `file://`, `s3://`,
`gs://`. Keys are opaque: `#`, `?` and spaces are part of a name.

Credentials come only from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_ENDPOINT_URL, AWS_REGION; STORAGE_EMULATOR_HOST for a GCS emulator)
or the cloud identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..redact import redact


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
        return _gcs(), rest
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


def _gcs() -> pafs.GcsFileSystem:
    """Google Cloud Storage with the default credentials; an emulator when
    STORAGE_EMULATOR_HOST names one (the variable Google's own clients read)."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if not emulator:
        return pafs.GcsFileSystem()
    parsed = urlparse(emulator if "://" in emulator else f"http://{emulator}")
    return pafs.GcsFileSystem(
        anonymous=True, endpoint_override=parsed.netloc, scheme=parsed.scheme or "http"
    )


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *[p.strip("/") for p in parts]])


def write_table(table: pa.Table, uri: str) -> None:
    """Write a Parquet file whole: an object store's put is atomic; a local file is written
    aside and renamed into place, so a listing never shows half of it."""
    fs, path = filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, path)
        except BaseException:  # a full disk, a kill: no half file left behind
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return
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
    """A small text object; None when it is absent (or deleted while it is read)."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except FileNotFoundError:
        return None


def read_json(uri: str):
    """A small JSON object; None when it is absent or not whole JSON (being written, cut)."""
    try:
        return json.loads(read_text(uri) or "null")
    except ValueError:
        return None


def list_files(uri: str) -> list[str]:
    """Files directly or recursively under a directory URI ([] when it does not exist)."""
    fs, path = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    base = uri.rstrip("/")
    return sorted(
        base + i.path[len(path.rstrip("/")) :] for i in infos if i.type == pafs.FileType.File
    )


def move(src: str, dst: str) -> None:
    """Rename `src` to `dst` on one store (an object store copies, then deletes)."""
    fs, path = filesystem(src)
    _, to = filesystem(dst)
    fs.create_dir(to.rsplit("/", 1)[0], recursive=True)
    fs.move(path, to)


def delete(uri: str) -> None:
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        fs.delete_file(path)
    elif info.type == pafs.FileType.Directory:
        fs.delete_dir(path)


def read_parquet_dir(uri: str, columns: list[str] | None = None) -> pa.Table | None:
    return read_parquet_files([f for f in list_files(uri) if f.endswith(".parquet")], columns)


def read_parquet_schema(uri: str) -> pa.Schema:
    """A Parquet file's schema, from its footer alone."""
    fs, path = filesystem(uri)
    return pq.read_schema(path, filesystem=fs)


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
