"""Input planning: which files a run reads (files, directories, globs; hive partitions) and
what they hold, checked before any model work."""

from __future__ import annotations

import fnmatch
from urllib.parse import unquote

import pyarrow.fs as pafs

from ..redact import redact
from .formats import INPUT_SUFFIXES
from .storage import filesystem


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
