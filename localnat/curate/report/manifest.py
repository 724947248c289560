"""What a complete run leaves for people and for the next run: teachers.json, teachers.md,
teachers.png, duplicates.parquet (when there are any), the dataset card README.md (when it
selected rows) and the manifest, which the Run writes last (its presence marks the run
complete). Nothing here writes."""

from __future__ import annotations

import json
import resource
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa

from ... import __version__
from ...fields import CHOICE
from ...logs import LOG
from ...options import as_command
from ...redact import redact
from ...scoring.student import DEFAULT_STUDENT
from ..choose.reduce import Reduced
from ..inputs.records import row_source
from ..run.directory import Executed, Run
from ..run.outputs import counts
from ..signals import SIGNALS
from .card import dataset_card
from .render import markdown, png


@dataclass
class Outcome:
    """What the run produced: the scores pass, the reduce, the choice (and racing's counts),
    what writing selected/ renamed or wrote as text, the stages' seconds, and what the
    cache's compaction did."""

    scored: Executed
    reduced: Reduced
    chosen: pd.DataFrame
    raced: dict
    written: dict
    timings: dict
    compacted: list = field(default_factory=list)  # the score cache's compactions
    ranking: dict = field(default_factory=dict)  # a teacher ranking's stop (choose/ranking.py)


def reports(run: Run, outcome: Outcome) -> tuple[dict, dict]:
    """What the run leaves besides its scores and selected/, nothing written: name ->
    content (text, bytes, a table; None: a file of an earlier choice that must go) and the
    manifest. A report that fails to render is listed in the manifest's `report_errors`,
    never fails a run whose scores are written."""
    board = outcome.reduced.board
    name = run.cfg.score.student or DEFAULT_STUDENT
    board["student"] = name
    board["signals"] = {k: asdict(s) for k, s in SIGNALS.items()}  # what each number means
    board["sample_steps"] = run.cfg.score.sample_steps  # LN estimated from sampled steps
    board["select_by"] = run.cfg.select_by  # the signal whose trust the validation weighs
    files: dict = {"teachers.json": json.dumps(board, indent=2)}
    dups = outcome.reduced.duplicates  # none: none of an earlier reduce stays either
    table = pa.Table.from_pandas(dups, preserve_index=False) if len(dups) else None
    files["duplicates.parquet"] = table
    errors = []
    for report, render in (("teachers.md", markdown), ("teachers.png", png)):
        try:
            files[report] = render(board, name)
        except Exception as err:  # noqa: BLE001
            errors.append(f"{report}: {type(err).__name__}: {err}")
            LOG.warning(f"{report} not written: {type(err).__name__}: {err}")
    manifest = _manifest(run, outcome, name, errors)
    files["README.md"] = None  # a ranking chooses none: no card of an earlier choice stays
    if len(outcome.chosen):  # selected/ as a dataset: what loads it and what chose it
        try:
            files["README.md"] = dataset_card(manifest, markdown(board, name), as_command(run.cfg))
        except Exception as err:  # noqa: BLE001
            errors.append(f"README.md: {type(err).__name__}: {err}")  # the manifest's list
            LOG.warning(f"README.md not written: {type(err).__name__}: {err}")
    return files, manifest


def _manifest(run: Run, outcome: Outcome, name: str, errors: list[str]) -> dict:
    cfg, scored, reduced = run.cfg, outcome.scored, outcome.reduced
    rows = counts(scored.chunks, len(run.plan.files))
    for cost in ("model_tokens", "padded_tokens"):  # every pass's
        rows[cost] += outcome.raced.get(f"race_{cost}", 0)
    if cfg.cache:
        rows["cache_misses"] = rows["scored"] - rows["cache_hits"]
    uris = {i: uri for i, uri, _ in run.plan.files}
    top = reduced.df.nlargest(5, "n_response_tokens")
    return {
        "status": "complete",
        "run_id": run.id,
        "run_dir": redact(run.dir),
        "localnat_version": __version__,
        "finished_utc": datetime.now(timezone.utc).isoformat(),
        "config": json.loads(redact(json.dumps(asdict(cfg), default=str))),
        "choice": cfg.settings(CHOICE),  # what a rerun must ask for to find this run complete
        "student": {
            "id": name,
            "revision": cfg.score.revision,
            "path": run.student.root,  # the real directory the actors loaded (local students)
            **run.student.record(),
        },
        "inputs": [redact(uri) for _, uri, _ in run.plan.files],
        "counts": {
            **rows,
            "prompts": reduced.board["n_prompts"],
            "matched_prompts": reduced.board["n_matched_prompts"],
            "selected": len(outcome.chosen),
            "duplicates": len(reduced.duplicates),
            "prompt_id_conflicts": reduced.prompt_id_conflicts,
            **outcome.raced,
            **scored.resumed,
            **{f"selected_{k}": outcome.written[k] for k in ("parts_written", "parts_resumed")},
        },
        **({"ranking": outcome.ranking} if outcome.ranking else {}),
        "report_errors": errors,
        # the longest responses: each costs about (k+1) x its tokens (README "Sizing")
        "most_expensive_rows": [
            {
                "source": row_source(redact(uris[r.file_index]), r.row_number),
                "teacher": r.teacher,
                "response_tokens": int(r.n_response_tokens),
            }
            for r in top.itertuples()
        ],
        "renamed_input_columns": outcome.written["renamed"],
        # passthrough columns whose types differ between (or within) files: written as text
        "selected_text_columns": outcome.written["as_text"],
        "timings_s": {k: round(v, 3) for k, v in outcome.timings.items()},
        "cache_compaction": outcome.compacted,
        "driver_peak_rss_mb": round(peak_rss_mb(), 1),
        "calls": _calls(scored.calls, cfg.call_tokens),
        "throughput": {
            "response_tokens_this_run": scored.tokens,
            "response_tokens_per_s": round(scored.tokens / scored.seconds, 1)
            if scored.calls and scored.seconds
            else None,
        },
    }


def _calls(calls: dict, budget: int) -> dict:
    """The scoring calls of this attempt (id -> rows, estimated tokens, actor)."""
    per_actor: dict[str, int] = {}
    for rows, _, actor in calls.values():
        per_actor[actor] = per_actor.get(actor, 0) + rows
    return {
        "n": len(calls),
        "budget_tokens": budget,
        "max_estimated_tokens": max((t for _, t, _ in calls.values()), default=0),
        "max_rows": max((r for r, _, _ in calls.values()), default=0),
        # every call over the budget holds one row: a response larger than the budget
        "over_budget_single_rows": sum(1 for r, t, _ in calls.values() if t > budget and r == 1),
        "over_budget_multi_rows": sum(1 for r, t, _ in calls.values() if t > budget and r > 1),
        "rows_per_actor": per_actor,
    }


def peak_rss_mb() -> float:
    """This process's own peak resident memory, in MiB. On Linux from VmHWM: `ru_maxrss`
    survives exec, so a driver started by a large process (a notebook, a benchmark
    holding its corpus) would report its parent's peak. Elsewhere `ru_maxrss` (macOS:
    bytes)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)
