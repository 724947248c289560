"""A curation job end to end, in the order data flows:

    plan -> Pass("scores") -> reduce -> Pass("race"), when racing -> select -> report
    plan -> Pass("rank-0") -> reduce -> Pass("rank-1") -> reduce ... -> report
                                     (--rank-teachers, until the top teacher stands apart)

Layout of OUTPUT/RUN_ID/ (a `Run` owns it, run/directory.py):
    scores/ rejects/       the scores pass's parts (f000012-c000003-<uuid>.parquet)
    _run.json _lease/ _done/   identity, lease, commit markers (run/outputs.py, run/lease.py)
    _selected/             selected/'s markers: a part is written for the rows they name
    race/                  racing's rounds, when it runs (choose/racing.py)
    rank/                  a teacher ranking's blocks, in its place of scores/ (choose/ranking.py)
    selected/              one row per prompt: its columns, scores, messages (choose/dataset.py)
    README.md              the dataset card (report/card.py): load_dataset(RUN_DIR) is selected/
    duplicates.parquet     rows repeating an earlier (prompt_id, teacher, response), if any
    teachers.json .md .png the leaderboard
    manifest.json          written last by the Run: its presence marks a complete run
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa

from ..fields import CHOICE, flag_names
from ..logs import LOG, scoped
from ..scoring.config import ScoreConfig
from .cache.score_cache import ScoreCache
from .choose.dataset import write_selected
from .choose.racing import raced_selection, races
from .choose.ranking import ranked
from .choose.reduce import reduce
from .choose.selection import select
from .inputs.plan import plan
from .job_config import CurateConfig
from .report.dry_run import dry_run
from .report.manifest import Outcome, reports
from .report.render import summary_table
from .report.show import show_run
from .run.directory import Run
from .run.passes import scores_pass
from .run.progress import check_cpus
from .run.student_checks import identify_student
from .settings import Choosing
from .storage import join, read_text


def run_job(cfg: CurateConfig) -> dict:
    """Run (or resume, or report a complete) curation job; returns its manifest with the
    terminal summary under "report" (a dry run: what it would do)."""
    with _arrow_pool(), scoped(cfg.verbose):  # the caller's logging and environment after
        return _run_job(cfg.resolved())


def _run_job(cfg: CurateConfig) -> dict:
    started = time.time()
    now = datetime.now(timezone.utc)
    output = cfg.output.replace("{date}", now.strftime("%Y-%m-%d"))
    run_dir = join(output, cfg.run_id or now.strftime("%Y%m%dT%H%M%SZ"))
    previous = None if cfg.overwrite or cfg.dry_run else _manifest(run_dir)
    if not cfg.dry_run:
        check_cpus(cfg.sizing)  # before any work: actors Ray can never place would wait forever
    inputs = plan(cfg.inputs, cfg.reading, output)
    if cfg.dry_run:
        return dry_run(inputs, cfg, run_dir)
    student = identify_student(cfg)  # the actors load exactly this (its real dir or commit)
    timings = {"plan": time.time() - started}

    cache = ScoreCache.of(cfg, student)
    with Run(cfg, run_dir, inputs, student, cache) as run:  # other inputs or student: refused
        if previous:
            changed = _rechosen(previous, cfg)
            if not changed:
                LOG.info(f"run {run.id} is complete at {run_dir} (use --overwrite to redo it)")
                return {**previous, "report": show_run(run_dir)}
            LOG.info(f"run {run.id} is complete, chosen otherwise ({changed}): choosing again")
            run.reopen()  # complete again once the choice is written
        ranking = {}
        if cfg.rank_teachers:  # prompts block by block until the top teacher stands apart
            scored, reduced, ranking = ranked(run, cfg.reading, cfg.score, cfg.choosing)
            timings["score"] = scored.seconds
        else:
            scored = run.execute(scores_pass(cfg.score))
            timings["score"] = scored.seconds
            t = time.time()
            reduced = reduce(cfg.choosing, run.dir, scored.parts, run.student.family)
            timings["reduce"] = time.time() - t

        chosen, raced, written = _choose(
            run, scored, reduced, timings, choosing=cfg.choosing, score=cfg.score
        )

        t = time.time()
        folded = cache.compact() if cache else []  # a year of nights stays small
        timings["compact"] = time.time() - t
        timings["total"] = time.time() - started
        outcome = Outcome(scored, reduced, chosen, raced, written, timings, folded, ranking)
        files, manifest = reports(run, outcome)
        run.complete(files, manifest)
        return {**manifest, "report": summary_table(reduced.board, manifest)}


def _choose(
    run: Run, scored, reduced, timings: dict, *, choosing: Choosing, score: ScoreConfig
) -> tuple[pd.DataFrame, dict, dict]:
    """Each prompt's response (racing's when it races), written to selected/; a teacher
    ranking chooses none (selected/ keeps no part of another choice). The choice, racing's
    counts and what writing selected/ did."""
    raced = {}
    if choosing.rank_teachers:
        chosen = reduced.df.iloc[:0]
        LOG.info(f"ranking: {reduced.board['n_prompts']} prompts ranked, none selected")
    elif races(choosing, score):  # sampled LN: more steps where the bounds cannot decide yet
        t = time.time()
        chosen, raced = raced_selection(run, choosing, score.sample_steps, reduced.df, scored)
        timings["race"] = time.time() - t
        LOG.info(
            f"racing (epsilon {choosing.race_epsilon:g}, delta {choosing.race_delta:g}): "
            f"{raced['race_rounds']} rounds over {raced['race_rows_per_round']} rows; "
            f"prompts settled per round {raced['prompts_settled_per_round']}"
        )
    else:
        correct_only = choosing.correct_column is not None
        chosen = select(reduced.df, choosing.select_by, choosing.seed, correct_only=correct_only)
    board = reduced.board
    LOG.info(
        f"reduce: {board['n_prompts']} prompts ({board['n_matched_prompts']} matched), "
        f"{len(chosen)} selected by {choosing.select_by}, {len(reduced.duplicates)} duplicates"
    )
    t = time.time()
    written = write_selected(run, chosen, reduced)
    timings["select"] = time.time() - t
    LOG.info(
        f"selected/: {written['parts_written']} parts written, {written['parts_resumed']} "
        f"resumed, in {timings['select']:.1f} s"
    )
    return chosen, raced, written


@contextmanager
def _arrow_pool():
    """The job's Arrow memory from jemalloc: it hands freed pages back between the reduce's
    stages, where mimalloc (pyarrow's default) keeps them (a 1M-row reduce peaks ~60 MB
    lower, docs/benchmarks.md); the caller's pool again after. A pool the user chose by
    ARROW_DEFAULT_MEMORY_POOL stays; a build without jemalloc keeps its default."""
    before = pa.default_memory_pool()
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
        except NotImplementedError:
            pass
    try:
        yield
    finally:
        pa.set_memory_pool(before)


def _rechosen(manifest: dict, cfg: CurateConfig) -> str:
    """The choice settings (`CHOICE`) in which this request differs from a complete run's,
    as flags: its scores stay, and the choice is made again (a ranking asked for more
    prompts continues from its blocks; a full run over a ranking's directory scores the
    rest). Empty: the complete run answers it."""
    before, now = manifest.get("choice"), cfg.settings(CHOICE)
    if not isinstance(before, dict):
        return "a choice not recorded"
    changed = [k for k, v in now.items() if before.get(k) != v]
    flags = flag_names(CurateConfig)
    return ", ".join(f"--{flags[k]} {before.get(k)!r} -> {now[k]!r}" for k in changed)


def _manifest(run_dir: str) -> dict | None:
    """A complete run's manifest; a corrupt one is rebuilt from the committed chunks."""
    text = read_text(join(run_dir, "manifest.json"))
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        LOG.warning(f"{run_dir}/manifest.json is unreadable: rebuilding it from the chunks")
        return None
