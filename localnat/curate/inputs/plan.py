"""Input planning: which files a run reads (files, directories, globs; hive partitions) and
what they hold, checked before any model work."""

from __future__ import annotations

import fnmatch
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import unquote

import pyarrow.fs as pafs

from ...logs import LOG
from ...redact import redact
from ..settings import Reading
from ..storage import filesystem
from .formats import INPUT_SUFFIXES, file_format, input_columns
from .records import as_bool, missing


class InputError(ValueError):
    """The inputs cannot be read as configured (raised before any model work)."""


@dataclass(frozen=True)
class InputPlan:
    """The input files of a run, numbered in URI order: (index, uri, hive root) each, their
    rows (Parquet footers' counts; JSONL estimated, `exact` False) for the ETA, and their
    bytes, to read small files in groups."""

    files: list[tuple[int, str, str]]
    rows: dict[int, int | None]
    exact: bool
    sizes: dict[int, int | None] = field(default_factory=dict)

    def rows_left(self, indexes, done: int = 0) -> int | None:
        counts = [self.rows.get(i) for i in indexes]
        return None if None in counts else max(sum(counts) - done, 0)


SMALL_FILE = 64 << 10  # a file this large is read (and its selected rows written) alone
GROUP_BYTES = 2 << 20  # small files read together: their bytes at most
GROUP_FILES = 512  # and their number


def file_groups(sizes: list[int | None]) -> list[slice]:
    """Consecutive files, by their bytes (None: unknown), in groups: small ones (under
    SMALL_FILE) together until a group holds GROUP_BYTES or GROUP_FILES, a larger file or
    one of unknown size alone. A per-call (or per-part) cost is then paid per group, while
    each file is still committed on its own."""
    groups, start, held = [], 0, 0
    for i, size in enumerate(sizes):
        small = size is not None and size < SMALL_FILE
        if i > start and (not small or held + size > GROUP_BYTES or i - start >= GROUP_FILES):
            groups.append(slice(start, i))
            start, held = i, 0
        held += size if small else GROUP_BYTES
    if start < len(sizes):
        groups.append(slice(start, len(sizes)))
    return groups


def plan(inputs: tuple[str, ...], reading: Reading, output: str) -> InputPlan:
    """The run's input files (outputs written inside an input directory are never read back
    as inputs), checked for the configured columns before any model work."""
    found = list_inputs(list(inputs), exclude=output)
    files = [(i, uri, root) for i, (uri, root) in enumerate(found)]
    rows, exact, sizes = check_columns(files, reading)
    return InputPlan(files, rows, exact, sizes)


def check_columns(files, reading: Reading) -> tuple[dict, bool, dict]:
    """Fail before any model work when a file lacks a configured column, or its correctness
    column's first values are not true/false, yes/no or 1/0. Returns each file's rows as read
    in the same pass (None for an unreadable file), whether all are exact, and each file's
    bytes. Warns when files give the prompt id different types (compared by value)."""
    cols = reading.columns
    correct, ids = cols.get("is_correct"), cols["prompt_id"]
    needed = [cols["prompt"], cols["response"], cols["teacher"]]
    needed += [c for c in (correct, reading.step_column) if c]
    sample = tuple(c for c in (correct, ids) if c)
    rows: dict[int, int | None] = {}
    sizes: dict[int, int | None] = {}
    exact = [True]
    id_types: dict[str, list[str]] = {}

    def problem(item) -> str | None:
        index, uri, root = item
        rows[index] = sizes[index] = None
        try:
            fs, path = filesystem(uri)
            sizes[index] = fs.get_file_info(path).size
            info = input_columns(uri, reading.input_format, sample)
        except Exception:  # noqa: BLE001 - unreadable: the pipeline rejects it with a reason
            return None
        rows[index] = info.rows
        exact[0] &= info.exact
        if info.names is None:  # no row: one reject row, as an unreadable file
            rows[index] = 1
            return None
        present = set(info.names) | set(hive_columns(uri, root))
        # JSONL writers may leave out null optional fields: those rows are rejected one by one.
        typed = file_format(uri, reading.input_format) in ("parquet", "arrow")  # a schema
        required = needed if typed else needed[:3]
        missing = [c for c in required if c not in present]
        if missing:
            return f"{redact(uri)}: missing {missing}; present: {sorted(present)}"
        kinds = _id_kinds(info.types.get(ids))
        if kinds:
            id_types.setdefault("/".join(sorted(kinds)), []).append(uri)
        return _not_boolean(info.sample.get(correct), correct, uri)

    with ThreadPoolExecutor(16) as pool:  # footers of many object-store files, in parallel
        problems = [p for p in pool.map(problem, files) if p]
    if problems:
        raise InputError(
            "input files cannot be read as configured (see --prompt-column etc.):\n  "
            + "\n  ".join(problems)
        )
    if len(id_types) > 1 or any("/" in kinds for kinds in id_types):
        found = ", ".join(
            f"{kinds} in {len(uris)} files (e.g. {redact(min(uris))})"
            for kinds, uris in sorted(id_types.items())
        )
        LOG.warning(
            f"{ids!r} has different types across files: {found}; ids are "
            "compared by value (1, 1.0 and '1' are one prompt)"
        )
    return rows, exact[0], sizes


def _id_kinds(types) -> set[str]:
    """A file's prompt id types (Arrow's, or the Python types of JSON values) as kinds."""
    out = set()
    for t in [types] if isinstance(types, str) else types or []:
        if t.startswith(("int", "uint")):
            out.add("integer")
        elif t in ("float", "double", "halffloat") or t.startswith("decimal"):
            out.add("float")
        elif t in ("str", "string", "large_string"):
            out.add("text")
        elif t not in ("null", "NoneType"):
            out.add(t)
    return out


def _not_boolean(values, column: str | None, uri: str) -> str | None:
    """Why a correctness column is not one (None: it is): most of its first non-null values
    are not true/false, yes/no or 1/0 (a stray value is its row's reject, not the run's)."""
    bad = []
    known = [v for v in values or [] if not missing(v)]
    for value in known:
        try:
            as_bool(value)
        except ValueError:
            bad.append(value)
    if not bad or 2 * len(bad) <= len(known):
        return None
    return (
        f"{redact(uri)}: --correct-column {column!r} is not a correctness column: "
        f"{len(bad)} of its first {len(known)} values are not true/false, yes/no or 1/0 "
        f"(e.g. {bad[0]!r})"
    )


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
            files = _datasets_data(fs, files)
            if not files:
                raise FileNotFoundError(f"no Parquet, Arrow or JSONL files under {redact(uri)}")
            found.update({to_uri(f): to_uri(path) for f in files})
        else:
            raise FileNotFoundError(f"input not found: {redact(uri)}")
    if exclude:
        found = {u: r for u, r in found.items() if not _inside(u, exclude)}
        if not found:
            raise FileNotFoundError("no input file outside the output directory")
    return sorted(found.items())


def _inside(uri: str, directory: str) -> bool:
    """Whether `uri` lies under `directory` on the same store; local paths compared as
    given and by their real paths (an input directory may hold a symlink to the output)."""
    fs, path = filesystem(uri)
    fs_dir, under = filesystem(directory)
    if type(fs) is not type(fs_dir):
        return False
    pairs = [(path, under)]
    if isinstance(fs, pafs.LocalFileSystem):
        pairs.append((os.path.realpath(path), os.path.realpath(under)))
    return any(p.startswith(d.rstrip("/") + "/") for p, d in pairs)


def _datasets_data(fs, files: list[str]) -> list[str]:
    """A `datasets` `save_to_disk` directory holds its rows in the Arrow files its state.json
    lists (`_data_files`); its JSON files (state, dataset_info, dataset_dict) are metadata,
    never input."""
    listed: dict[str, set[str]] = {}
    for f in files:
        where, name = f.rsplit("/", 1)
        if name == "state.json":
            try:
                with fs.open_input_stream(f) as src:
                    state = json.loads(src.read())
                listed[where] = {x["filename"] for x in state["_data_files"]}
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a datasets directory: its files are inputs as any others
    out = []
    for f in files:
        where, name = f.rsplit("/", 1)
        if where in listed:
            if name in listed[where]:
                out.append(f)
        elif not (name == "dataset_dict.json" and any(d.startswith(where) for d in listed)):
            out.append(f)
    return out


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
