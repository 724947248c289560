"""The commit protocol of a run directory: what makes written rows outputs, and resume.

    _run.json            the run's identity: inputs and scoring settings it started with
    _done/f000012.json   input file 12's rows are all written, in the parts it lists

Parts (scores/, rejects/) are written first, under unique names; a file is committed by its
marker, written after all its parts. Only parts a marker lists are outputs: a resumed run
redoes unmarked files and deletes the parts no marker lists, so a run killed anywhere ends
with exactly one copy of every row.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from .config import CurateConfig
from .io import delete, file_size, join, list_files, read_text, redact, write_text

# Settings that change speed, never a score: a resume may change them.
SPEED_ONLY = {"batch_tokens", "head_chunk", "device", "attn_implementation"}


class RunMismatch(ValueError):
    """A resume whose inputs or settings differ from the run it would continue."""


def check_same_run(run_dir: str, files, cfg: CurateConfig) -> None:
    """A resumed run must see the inputs and scoring settings it started with: done markers
    refer to input files by position, and mixing settings would mix scores."""
    score = {k: v for k, v in asdict(cfg.score).items() if k not in SPEED_ONLY}
    identity = {
        "inputs": [[redact(uri), file_size(uri)] for _, uri, _ in files],
        "score": json.loads(redact(json.dumps(score, default=str))),
        "columns": cfg.columns,
    }
    started = read_text(join(run_dir, "_run.json"))
    if started is None:
        write_text(join(run_dir, "_run.json"), json.dumps(identity, indent=2))
    elif json.loads(started) != identity:
        raise RunMismatch(
            f"{redact(run_dir)} was started with other inputs or scoring settings; "
            "use a new --run-id, or --overwrite to start this one again"
        )


def marker(run_dir: str, index: int) -> str:
    return join(run_dir, "_done", f"f{index:06d}.json")


def commit_file(run_dir: str, index: int, uri: str, counts: dict) -> None:
    write_text(marker(run_dir, index), json.dumps({"uri": redact(uri), **counts}))


def completed_files(run_dir: str) -> dict[int, dict]:
    done = {}
    for uri in list_files(join(run_dir, "_done")):
        name = uri.rsplit("/", 1)[-1]
        if name.startswith("f") and name.endswith(".json"):
            try:
                done[int(name[1:-5])] = json.loads(read_text(uri))
            except ValueError:  # cut short by a crash: the file is redone
                delete(uri)
    return done


def remove_uncommitted(run_dir: str) -> None:
    """Delete every scores/rejects part that no done marker lists."""
    committed = {p for d in completed_files(run_dir).values() for p in d["parts"]}
    for sub in ("scores", "rejects"):
        for uri in list_files(join(run_dir, sub)):
            if f"{sub}/{uri.rsplit('/', 1)[-1]}" not in committed:
                delete(uri)


def file_counts(run_dir: str, files) -> dict:
    done = completed_files(run_dir)
    scored = sum(d["scored"] for d in done.values())
    rejected = sum(d["rejected"] for d in done.values())
    return {
        "input_files": len(files),
        "input_rows": scored + rejected,
        "scored": scored,
        "rejected": rejected,
        "oom_splits": sum(d["oom_splits"] for d in done.values()),
    }
