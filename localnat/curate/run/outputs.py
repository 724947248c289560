"""The one writer of a run's directory, OUTPUT/RUN_ID/: every file the run, its passes'
actors, selected/'s tasks and the reports leave there is written or deleted here, and
nowhere else (the lease's own file aside: lease.py), always by a path inside a directory of
the run (`_inside`). Then the commit protocol that makes written rows outputs:

    _run.json                   the run's identity: input versions and the settings it started
                                with (resume.py); only a directory holding it is ever deleted
                                (--overwrite)
    _lease/<owner>.json         the run that holds the directory now (lease.py)
    _done/f000012-c000003.json  rows of chunk 3 of input file 12 are all written, in the parts
                                it lists ("last": true on a file's final chunk; "shared":
                                part -> how many markers list it, for a part several
                                chunks share)
    _selected/f000012.json      selected/f000012.parquet is written, for the rows whose digest
                                it holds (choose/dataset.py), with the schema it was written in

A chunk is `commit_rows` consecutive rows of one input file, in file order, so a large file
commits as it goes and a resumed run skips the chunks already done. Parts (scores/,
rejects/) are written first under unique names; a chunk is committed by its marker, written
after all its parts. Only parts a marker lists are outputs: a resumed run deletes the parts
no marker lists, so a run killed anywhere ends with exactly one copy of every row. The
chunks whole in one call share its parts: their markers are written one after another, and
until all of them are, none counts (a resume deletes those written and redoes the chunks),
so a part never holds rows of a chunk that is not committed. Cleanup runs only under the
lease, so it never deletes a part another live run may list.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from ...redact import redact
from ..storage import (
    delete,
    join,
    list_files,
    read_json,
    read_parquet_files,
    read_text,
    write_bytes,
    write_table,
    write_text,
)
from .resume import RunMismatch


def write(directory: str, name: str, content: str | bytes | pa.Table) -> str:
    """`content` (text, bytes or a Parquet table) as `name` inside `directory`, whole
    (storage.py: never half a file); its URI."""
    uri = _inside(directory, name)
    if isinstance(content, pa.Table):
        write_table(content, uri)
    elif isinstance(content, str):
        write_text(uri, content)
    else:
        write_bytes(uri, content)
    return uri


def remove(directory: str, name: str) -> None:
    """Delete the file `name` inside `directory` (a report of an earlier choice, the manifest
    of a run reopened), or every file under it when it is a folder."""
    uri = _inside(directory, name)
    delete(uri)
    for inner in list_files(uri):
        delete(inner)


def start(run_dir: str, identity: dict) -> None:
    """A new run's identity (resume.py), written before anything else of it."""
    write(run_dir, "_run.json", json.dumps(identity, indent=2))


def start_pass(directory: str, identity: dict) -> None:
    """A pass with an identity of its own (racing's: its z and rows) resumes only the pass
    it started; another one starts its directory, inside the run's, again."""
    if read_json(join(directory, "_pass.json")) == identity:
        return
    for uri in list_files(directory):
        delete(uri)
    write(directory, "_pass.json", json.dumps(identity))


def merge_parts(directory: str, chunk: tuple[int, int], parts: list[str]) -> list[str]:
    """A committed chunk's parts, at most one scores/ and one rejects/: several (one per call
    that held rows of the chunk) are merged into a new one. Returns what the
    marker lists; the parts merged stay until the pass's cleanup (no marker lists them)."""
    out = []
    for sub in ("scores", "rejects"):
        mine = [p for p in parts if p.startswith(f"{sub}/")]
        if len(mine) <= 1:
            out += mine
            continue
        table = read_parquet_files([join(directory, p) for p in mine])
        name = f"{sub}/f{chunk[0]:06d}-c{chunk[1]:06d}-{uuid.uuid4().hex[:12]}.parquet"
        write(directory, name, table)
        out.append(name)
    return out


def _inside(directory: str, name: str) -> str:
    """`directory`/`name`, refusing a name that would leave it (absolute, a URI, `..`)."""
    if "://" in name or any(step in ("", ".", "..") for step in name.split("/")):
        raise ValueError(f"{name!r} is not a path inside the run's directory")
    return join(directory, name)


def prepare_overwrite(run_dir: str) -> None:
    """--overwrite deletes the run directory only when it is one of ours (holds _run.json);
    a directory with anything else in it is never deleted."""
    leases = f"{join(run_dir, '_lease')}/"
    entries = [u for u in list_files(run_dir) if not u.startswith(leases)]  # ours stays
    if not entries:
        return
    if read_text(join(run_dir, "_run.json")) is None:
        raise RunMismatch(
            f"--overwrite refused: {redact(run_dir)} holds files but no localnat _run.json, "
            "so it is not a localnat run directory; nothing was deleted"
        )
    # manifest first (a half-deleted run is never "complete"), _run.json last (it is still
    # ours if this is interrupted)
    order = sorted(
        entries, key=lambda u: (not u.endswith("/manifest.json"), u.endswith("/_run.json"))
    )
    for uri in order:
        delete(uri)


def commit_chunk(run_dir: str, file_index: int, chunk: int, uri: str, record: dict) -> None:
    body = json.dumps({"uri": redact(uri), **record})
    write(run_dir, f"_done/f{file_index:06d}-c{chunk:06d}.json", body)


def committed_chunks(run_dir: str, clean: bool = True) -> dict[tuple[int, int], dict]:
    """(file index, chunk) -> marker. A marker cut short by a crash is ignored, and deleted
    (so its chunk is redone) when `clean` (only under the lease)."""
    uris = [u for u in list_files(join(run_dir, "_done")) if u.endswith(".json")]
    with ThreadPoolExecutor(16) as pool:
        bodies = list(pool.map(read_json, uris))
    done = {}
    for uri, body in zip(uris, bodies):
        name = uri.rsplit("/", 1)[-1][:-5]
        try:
            f, c = name.split("-")
            key = (int(f[1:]), int(c[1:]))
        except ValueError:
            continue  # not ours
        if not isinstance(body, dict) or "parts" not in body:
            if clean:
                delete(uri)
            continue
        done[key] = (uri, body)
    listed = Counter(p for _, body in done.values() for p in body["parts"])
    for key, (uri, body) in list(done.items()):
        if any(listed[p] != n for p, n in body.get("shared", {}).items()):
            # a group cut short between its markers: none of it is committed
            if clean:
                delete(uri)
            del done[key]
    return {key: body for key, (_, body) in done.items()}


def committed_parts(chunks: dict[tuple[int, int], dict], sub: str) -> list[str]:
    """The parts of `sub` ("scores" or "rejects") the markers list, each once (a part
    shared by several chunks is listed by each), relative to the pass's directory."""
    return sorted({p for body in chunks.values() for p in body["parts"] if p.startswith(sub)})


def completed_files(chunks: dict[tuple[int, int], dict]) -> set[int]:
    """Files whose every chunk, up to the one marked last, is committed."""
    last: dict[int, set] = {}
    for (f, c), body in chunks.items():
        if body.get("last"):
            last.setdefault(f, set()).add(c)
    # two "last" chunks for one file cannot happen for one version of it: never complete
    return {
        f
        for f, ends in last.items()
        if len(ends) == 1 and all((f, c) in chunks for c in range(max(ends) + 1))
    }


def remove_uncommitted(run_dir: str, chunks: dict[tuple[int, int], dict]) -> None:
    """Delete every scores/rejects part that no marker lists (call under the lease)."""
    committed = {p for body in chunks.values() for p in body["parts"]}
    for sub in ("scores", "rejects"):
        for uri in list_files(join(run_dir, sub)):
            if f"{sub}/{uri.rsplit('/', 1)[-1]}" not in committed:
                delete(uri)


def commit_selected(run_dir: str, name: str, record: dict) -> None:
    """selected/`name` is written: its marker, after the part."""
    write(run_dir, f"_selected/{name[: -len('.parquet')]}.json", json.dumps(record))


def committed_selected(run_dir: str, keep: dict[str, str]) -> dict[str, dict]:
    """selected/'s parts that are outputs: part name -> marker, for the parts `keep` names
    with the digest their marker holds, and that are there. Every other part and marker
    (another choice's, or a part written and not committed) is deleted, its marker first
    (call under the lease)."""
    markers = {
        uri.rsplit("/", 1)[-1][:-5] + ".parquet": uri
        for uri in list_files(join(run_dir, "_selected"))
        if uri.endswith(".json")
    }
    parts = {uri.rsplit("/", 1)[-1]: uri for uri in list_files(join(run_dir, "selected"))}
    with ThreadPoolExecutor(16) as pool:
        bodies = dict(zip(markers, pool.map(read_json, markers.values())))
    kept = {}
    for name, uri in markers.items():
        body = bodies[name]
        if name in parts and isinstance(body, dict) and keep.get(name) == body.get("digest"):
            kept[name] = body
        else:
            delete(uri)
    for name, uri in parts.items():
        if name not in kept:
            delete(uri)
    return kept


def counts(chunks: dict[tuple[int, int], dict], n_files: int) -> dict:
    scored = sum(d["scored"] for d in chunks.values())
    rejected = sum(d["rejected"] for d in chunks.values())
    return {
        "input_files": n_files,
        "input_rows": scored + rejected,
        "scored": scored,
        "rejected": rejected,
        "oom_splits": sum(d["oom_splits"] for d in chunks.values()),
        # every token the student ran for these rows, every attempt's (markers before: 0)
        "model_tokens": sum(d.get("model_tokens", 0) for d in chunks.values()),
        "padded_tokens": sum(d.get("padded_tokens", 0) for d in chunks.values()),
        # scored rows whose scores came from the score cache (markers before it: none)
        "cache_hits": sum(d.get("reused", 0) for d in chunks.values()),
    }
