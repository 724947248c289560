"""What a resume must match: the run's identity (`_run.json`), and every input file at the
version the run identified. Reads only: outputs.py writes the identity."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from ...fields import ROWS, SCORES, flag_names
from ...redact import redact
from ...scoring.config import ScoreConfig
from ...scoring.schema import SCORING_VERSION
from ..job_config import CurateConfig
from ..signals import score_columns
from ..storage import file_version, join, read_text
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


def check_same_run(run_dir: str, identity: dict) -> bool:
    """A resumed run must see the inputs, student and settings it started with: markers
    refer to input files by position and rows by order, and mixing would mix scores.
    False: the run is new (no identity yet; `outputs.start` writes it)."""
    started = read_text(join(run_dir, "_run.json"))
    if started is None:
        return False
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
    return True


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
            flags = flag_names(CurateConfig, ScoreConfig)
            out.append("settings " + ", ".join(f"--{flags.get(n, n)}" for n in names))
        elif key == "inputs" and isinstance(old, list):
            moved = [u for (u, v) in new if [u, v] not in old] + [
                u for (u, v) in old if u not in {n for n, _ in new}
            ]
            out.append("inputs " + ", ".join(moved[:5]) + (" ..." if len(moved) > 5 else ""))
        else:
            out.append(key)
    return out
