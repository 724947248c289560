"""The commit protocol of a run directory: who may write it, what makes written rows outputs,
and resume.

    _run.json                   the run's identity: input versions and the settings it started
                                with; only a directory holding it is ever deleted (--overwrite)
    _lease/<owner>.json         the run that holds the directory now (lease.py)
    _done/f000012-c000003.json  rows of chunk 3 of input file 12 are all written, in the parts
                                it lists ("last": true on a file's final chunk; "shared":
                                part -> how many markers list it, for a part several
                                chunks share)

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
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields

from ...fields import ROWS, SCORES, flag_name
from ...redact import redact
from ...scoring.config import ScoreConfig
from ...scoring.schema import SCORING_VERSION
from ..job_config import CurateConfig
from ..signals import score_columns
from ..storage import delete, file_version, join, list_files, read_json, read_text, write_text
from .identity import StudentIdentity, changes


class RunMismatch(ValueError):
    """A resume whose inputs or settings differ from the run it would continue."""


class InputChanged(RunMismatch):
    """An input file changed while the run read it: rows read before and after the change
    cannot be told apart, so nothing more of it is committed or selected."""


def input_versions(files, identity: dict) -> dict[int, dict]:
    """File index -> the version the run identified it at (`run_identity`'s inputs)."""
    return {i: version for (i, _, _), (_, version) in zip(files, identity["inputs"])}


def check_unchanged(uris: dict[int, str], versions: dict[int, dict]) -> None:
    """Raise InputChanged, naming the files, when any of `uris` (index -> uri) is not at the
    version the run started with (read in parallel: a HEAD per object-store file)."""
    items = sorted(uris.items())
    with ThreadPoolExecutor(16) as pool:
        now = list(pool.map(lambda item: file_version(item[1]), items))
    moved = [uri for (i, uri), v in zip(items, now) if v != versions[i]]
    if moved:
        raise InputChanged(
            f"input files changed during the run: {', '.join(map(redact, moved[:5]))}"
            f"{' ...' if len(moved) > 5 else ''}; rows read before and after a change cannot be "
            "told apart: rerun with a new --run-id (or --overwrite) once they hold still"
        )


def run_identity(files, cfg: CurateConfig, student: StudentIdentity) -> dict:
    """What a resume must match: the scoring code's version, every input file's version
    (size + mtime/ETag), the student's identity (every file's digest and the prompt probe),
    every setting declared to change a score or a row's fate (`CurateConfig.settings`), and
    the score columns."""
    with ThreadPoolExecutor(16) as pool:  # one HEAD per object-store file, in parallel
        versions = list(pool.map(file_version, [uri for _, uri, _ in files]))
    return {
        "scoring_version": SCORING_VERSION,  # an upgrade that changes a number: a new run
        "inputs": [[redact(uri), v] for (_, uri, _), v in zip(files, versions)],
        "settings": json.loads(redact(json.dumps(cfg.settings(SCORES, ROWS), default=str))),
        "student": student.record(),
        # a resume by a version that writes other score columns would mix two schemas
        "score_columns": score_columns(cfg.score),
    }


def check_same_run(run_dir: str, identity: dict) -> None:
    """A resumed run must see the inputs, student and settings it started with: markers
    refer to input files by position and rows by order, and mixing would mix scores."""
    started = read_text(join(run_dir, "_run.json"))
    if started is None:
        write_text(join(run_dir, "_run.json"), json.dumps(identity, indent=2))
        return
    try:
        previous = json.loads(started)
    except ValueError:
        raise RunMismatch(
            f"{redact(run_dir)}/_run.json is unreadable, so this run's inputs cannot be "
            "checked: use --overwrite to start it again, or a new --run-id"
        ) from None
    if previous != identity:
        raise RunMismatch(
            f"{redact(run_dir)} was started with other inputs, student or scoring settings "
            f"(changed: {'; '.join(_changed(previous, identity))}); use a new --run-id, or "
            "--overwrite to start this one again"
        )


def _changed(before: dict, now: dict) -> list[str]:
    out = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if key == "student" and isinstance(old, dict):
            out.append("the student: " + ", ".join(changes(old, new)))
        elif key == "settings" and isinstance(old, dict):
            names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            flags = {f.name: flag_name(f) for c in (CurateConfig, ScoreConfig) for f in fields(c)}
            out.append("settings " + ", ".join(f"--{flags.get(n, n)}" for n in names))
        elif key == "inputs" and isinstance(old, list):
            moved = [u for (u, v) in new if [u, v] not in old] + [
                u for (u, v) in old if u not in {n for n, _ in new}
            ]
            out.append("inputs " + ", ".join(moved[:5]) + (" ..." if len(moved) > 5 else ""))
        else:
            out.append(key)
    return out


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


def marker(run_dir: str, file_index: int, chunk: int) -> str:
    return join(run_dir, "_done", f"f{file_index:06d}-c{chunk:06d}.json")


def commit_chunk(run_dir: str, file_index: int, chunk: int, uri: str, record: dict) -> None:
    write_text(marker(run_dir, file_index, chunk), json.dumps({"uri": redact(uri), **record}))


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
