"""Run a curation job end to end: plan, resume, stream the Ray pipeline, reduce, report.

Layout of OUTPUT/RUN_ID/:
    scores/ rejects/       one part per input file and batch, f000012-<uuid>.parquet
    _run.json, _done/      the commit protocol (commit.py)
    selected/              one row per prompt, original columns + scores
    duplicates.parquet     rows repeating an earlier (prompt_id, teacher, response), if any
    teachers.json .md .png the leaderboard
    manifest.json          written last: its presence marks a complete run
"""

from __future__ import annotations

import heapq
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from .. import __version__
from ..logs import LOG, native_noise_dropped
from ..logs import setup as setup_logs
from ..redact import redact
from ..scoring.student import DEFAULT_STUDENT
from .cache import open_namespace
from .columns import REDUCE_COLUMNS, SIGNALS
from .commit import (
    Lease,
    check_same_run,
    commit_chunk,
    committed_chunks,
    completed_files,
    counts,
    prepare_overwrite,
    remove_uncommitted,
    run_identity,
)
from .config import CurateConfig
from .formats import file_format, input_columns, read_rows
from .identity import StudentIdentity, identify
from .inputs import hive_columns, list_inputs
from .leaderboard import leaderboard
from .progress import Progress, start_ray, uninterrupted
from .racing import raced_selection, racing
from .report import markdown, png, summary_table
from .runs import show_run
from .selection import duplicates, select, write_selected
from .storage import join, read_parquet_files, read_text, write_bytes, write_table, write_text

SAMPLE = Path(__file__).parent.parent / "sample" / "mip_math_sample.parquet"
DEMO = Path(__file__).parent.parent / "sample" / "demo_gsm8k.parquet"


class InputError(ValueError):
    """The input cannot be used as configured (raised before any model is loaded)."""


def run_job(cfg: CurateConfig) -> dict:
    setup_logs(cfg.verbose)
    started = time.time()
    timings: dict[str, float] = {}
    if not cfg.inputs:
        # The first run: the bundled demo slice, graded, with the offline student.
        cfg = replace(cfg, inputs=(str(DEMO),), correct_column=cfg.correct_column or "is_correct")
    now = datetime.now(timezone.utc)
    run_id = cfg.run_id or now.strftime("%Y%m%dT%H%M%SZ")
    output = cfg.output.replace("{date}", now.strftime("%Y-%m-%d"))
    run_dir = join(output, run_id)

    previous = _manifest(run_dir)
    if previous and not cfg.overwrite and not cfg.dry_run:
        LOG.info(f"run {run_id} is complete at {run_dir} (use --overwrite to redo it)")
        return {**previous, "report": show_run(run_dir)}

    # Outputs written inside an input directory are never read back as inputs.
    files = list_inputs(list(cfg.inputs), exclude=output)
    files = [(i, uri, root) for i, (uri, root) in enumerate(files)]
    file_rows = check_columns(files, cfg)
    if cfg.dry_run:
        return dry_run(files, cfg, run_dir)
    student = identify_student(cfg)
    if student.commit:  # a hub id: the actors load the commit identified here
        cfg = replace(cfg, score=replace(cfg.score, revision=student.commit))

    with Lease(run_dir):
        if cfg.overwrite:
            prepare_overwrite(run_dir)
        check_same_run(run_dir, run_identity(files, cfg, student))
        chunks = committed_chunks(run_dir)
        remove_uncommitted(run_dir, chunks)
        done = completed_files(chunks)
        resumed = {"files_resumed": len(done), "chunks_resumed": len(chunks)}
        todo = [f for f in files if f[0] not in done]
        LOG.info(
            f"run {run_id}: {len(files)} input files ({len(done)} already done), output {run_dir}"
        )
        timings["plan"] = time.time() - started

        tokens, calls = 0, {}
        if todo:
            t = time.time()
            skip = {}
            for f, c in chunks:
                skip.setdefault(f, []).append(c)
            cache = open_namespace(cfg, student) if cfg.cache else None
            if cache:
                LOG.info(f"score cache {redact(cache[0])}: {len(cache[1])} parts")
            rows = total_rows(todo, file_rows, chunks)
            tokens, calls = stream(todo, cfg, run_dir, skip, rows, cache)
            timings["score"] = time.time() - t
            LOG.info(
                f"scored {len(todo)} files in {timings['score']:.1f} s "
                f"({tokens / timings['score']:.1f} response tokens/s)"
            )
        chunks = committed_chunks(run_dir)
        remove_uncommitted(run_dir, chunks)  # parts a lost worker may have written meanwhile
        missing = sorted({i for i, _, _ in files} - completed_files(chunks))
        if missing:
            raise RuntimeError(f"input files not completed: {missing}; rerun to finish them")
        scored = {"tokens": tokens, "calls": calls, "resumed": resumed}
        return finish(cfg, files, run_dir, chunks, student, scored, timings, started)


def wait_for_gpus(cfg: CurateConfig, poll_s: float = 30.0) -> None:
    """--gpus-per-actor on a cluster without them would wait forever for an actor: fail at
    once on a local cluster; on a remote one (GPU nodes may be autoscaling up) wait up to
    --gpu-wait seconds, saying so."""
    import ray

    if not cfg.gpus_per_actor:
        return
    deadline = time.time() + (
        cfg.gpu_wait if cfg.ray_address or os.environ.get("RAY_ADDRESS") else 0
    )
    while True:
        have = ray.cluster_resources().get("GPU", 0)
        if have >= cfg.gpus_per_actor:
            return
        if time.time() >= deadline:
            raise InputError(
                f"--gpus-per-actor {cfg.gpus_per_actor:g}: the Ray cluster has {have:g} GPUs "
                f"(resources: {ray.cluster_resources()}); use --gpus-per-actor 0 for CPU"
            )
        LOG.info(
            f"waiting for GPUs: the cluster has {have:g}, an actor needs {cfg.gpus_per_actor:g}"
        )
        time.sleep(min(poll_s, max(0.0, deadline - time.time())))


def _rows_per_actor(calls: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for rows, _, actor in calls.values():
        out[actor] = out.get(actor, 0) + rows
    return out


def _manifest(run_dir: str) -> dict | None:
    """A complete run's manifest; a corrupt one is rebuilt from the committed chunks."""
    text = read_text(join(run_dir, "manifest.json"))
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        LOG.info(f"{run_dir}/manifest.json is unreadable: rebuilding it from the committed chunks")
        return None


def check_student(cfg: CurateConfig):
    """Load the student's config and tokenizer here, before any Ray work: a missing or broken
    student is one clear line, not an actor traceback a minute later. Returns the tokenizer."""
    from transformers import AutoConfig

    from ..scoring.student import load_tokenizer, resolve_student

    student = resolve_student(cfg.score.student)
    try:
        AutoConfig.from_pretrained(
            student, revision=cfg.score.revision, trust_remote_code=cfg.score.trust_remote_code
        )
        return load_tokenizer(cfg.score)
    except Exception as err:  # noqa: BLE001 - any failure to load is the same message
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"cannot load the student {student!r}: {first}") from None


def identify_student(cfg: CurateConfig) -> StudentIdentity:
    """The student checked (`check_student`) and identified: every file's digest and how it
    renders a prompt (identity.py); what the cache namespace and a resume rest on."""
    from ..scoring.student import prompt_probe, resolve_student

    probe = prompt_probe(check_student(cfg), cfg.score.system_prompt)
    t = time.time()
    student = identify(resolve_student(cfg.score.student), cfg.score.revision, probe)
    LOG.info(f"student {student.name}: identity {student.digest} ({time.time() - t:.1f} s)")
    return student


def finish(cfg, files, run_dir, chunks, student, scored: dict, timings, started) -> dict:
    """The reduce, the reports and the manifest, from the committed outputs. `scored`: this
    attempt's response tokens, calls and what it resumed."""
    tokens, calls, resumed = scored["tokens"], scored["calls"], scored["resumed"]
    run_id = run_dir.rsplit("/", 1)[-1]
    t = time.time()
    committed = [join(run_dir, p) for d in chunks.values() for p in d["parts"]]
    scores = read_parquet_files([p for p in committed if "/scores/" in p], REDUCE_COLUMNS)
    if scores is None:
        raise InputError(f"no row could be scored; see {join(run_dir, 'rejects')}")
    df = scores.to_pandas()
    dups = duplicates(df)
    if len(dups):
        write_table(
            pa.Table.from_pandas(dups, preserve_index=False), join(run_dir, "duplicates.parquet")
        )
    df = df[~df["row_id"].isin(dups["row_id"])]
    board = leaderboard(df, cfg.seed, min_share=cfg.min_matched_share)
    timings["reduce"] = time.time() - t
    raced = {}
    if racing(cfg):  # sampled LN: the choice is made exact where the sample cannot make it
        t = time.time()
        chosen, raced = raced_selection(files, df, cfg, run_dir, chunks, student)
        timings["race"] = time.time() - t
        LOG.info(
            f"racing (z={cfg.race_z:g}): {raced['race_rescored']} of {raced['race_survivors']} "
            f"survivors rescored exactly; {raced['prompts_settled_by_sample']} prompts settled "
            f"by the sample, {raced['prompts_settled_by_exact']} by the exact pass"
        )
    else:
        chosen = select(df, cfg.select_by, cfg.seed, correct_only=cfg.correct_column is not None)
    LOG.info(
        f"reduce: {board['n_prompts']} prompts ({board['n_matched_prompts']} matched), "
        f"{len(chosen)} selected by {cfg.select_by}, {len(dups)} duplicates"
    )

    t = time.time()
    written = write_selected(files, chosen, df, cfg, run_dir)
    timings["select"] = time.time() - t
    LOG.info(f"selected/ written in {timings['select']:.1f} s")

    name = cfg.score.student or DEFAULT_STUDENT
    board["student"] = name
    board["signals"] = {k: asdict(s) for k, s in SIGNALS.items()}  # what each number means
    board["sample_steps"] = cfg.score.sample_steps  # LN estimated from sampled steps when set
    write_text(join(run_dir, "teachers.json"), json.dumps(board, indent=2))
    report_errors = []
    for name, render in (("teachers.md", markdown), ("teachers.png", png)):
        try:  # a report that fails to render must not fail a run whose scores are written
            out = render(board, name)
            (write_text if isinstance(out, str) else write_bytes)(join(run_dir, name), out)
        except Exception as err:  # noqa: BLE001
            report_errors.append(f"{name}: {type(err).__name__}: {err}")
            LOG.warning(f"{name} not written: {type(err).__name__}: {err}")
    top = df.nlargest(5, "n_response_tokens")[["source", "teacher", "n_response_tokens"]]

    rows = counts(chunks, len(files))
    if cfg.cache:
        rows["cache_misses"] = rows["scored"] - rows["cache_hits"]
    timings["total"] = time.time() - started
    manifest = {
        "status": "complete",
        "run_id": run_id,
        "run_dir": redact(run_dir),
        "localnat_version": __version__,
        "finished_utc": datetime.now(timezone.utc).isoformat(),
        "config": json.loads(redact(json.dumps(asdict(cfg), default=str))),
        "student": {"id": name, "revision": cfg.score.revision, **student.record()},
        "inputs": [redact(uri) for _, uri, _ in files],
        "counts": {
            **rows,
            "prompts": board["n_prompts"],
            "matched_prompts": board["n_matched_prompts"],
            "selected": len(chosen),
            "duplicates": len(dups),
            **raced,
            **resumed,
        },
        "report_errors": report_errors,
        # the longest responses: each costs about (k+1) x its tokens (README "Sizing")
        "most_expensive_rows": [
            {"source": r.source, "teacher": r.teacher, "response_tokens": int(r.n_response_tokens)}
            for r in top.itertuples()
        ],
        "renamed_input_columns": written["renamed"],
        # passthrough columns whose types differ between (or within) files: written as text
        "selected_text_columns": written["as_text"],
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "driver_peak_rss_mb": round(peak_rss_mb(), 1),
        "calls": {
            "n": len(calls),
            "budget_tokens": cfg.call_tokens,
            "max_estimated_tokens": max((t for _, t, _ in calls.values()), default=0),
            "max_rows": max((r for r, _, _ in calls.values()), default=0),
            # every call over the budget holds one row: a response larger than the budget
            "over_budget_single_rows": sum(
                1 for r, t, _ in calls.values() if t > cfg.call_tokens and r == 1
            ),
            "over_budget_multi_rows": sum(
                1 for r, t, _ in calls.values() if t > cfg.call_tokens and r > 1
            ),
            "rows_per_actor": _rows_per_actor(calls),
        },
        "throughput": {
            "response_tokens_this_run": tokens,
            "response_tokens_per_s": round(tokens / timings["score"], 1)
            if timings.get("score")
            else None,
        },
    }
    write_text(join(run_dir, "manifest.json"), json.dumps(manifest, indent=2))
    LOG.info(f"run {run_id} complete")
    return {**manifest, "report": summary_table(board, manifest)}


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def check_columns(files, cfg: CurateConfig) -> dict[int, int | None]:
    """Fail before any model work when a file lacks a configured column. Returns each file's
    row count where its footer says it (Parquet), read in the same pass, else None."""
    needed = [cfg.prompt_column, cfg.response_column, cfg.teacher_column]
    needed += [c for c in (cfg.correct_column, cfg.score.step_column) if c]
    rows: dict[int, int | None] = {}

    def problem(item) -> str | None:
        index, uri, root = item
        rows[index] = None
        try:
            columns, rows[index] = input_columns(uri, cfg.input_format)
        except Exception:  # noqa: BLE001 - unreadable: the pipeline rejects it with a reason
            return None
        if columns is None:  # no row: one reject row, as an unreadable file
            return None
        present = set(columns) | set(hive_columns(uri, root))
        # JSONL writers may leave out null optional fields: those rows are rejected one by one.
        required = needed if file_format(uri, cfg.input_format) == "parquet" else needed[:3]
        missing = [c for c in required if c not in present]
        return f"{redact(uri)}: missing {missing}; present: {sorted(present)}" if missing else None

    with ThreadPoolExecutor(16) as pool:  # footers of many object-store files, in parallel
        problems = [p for p in pool.map(problem, files) if p]
    if problems:
        raise InputError(
            "input files lack configured columns (see --prompt-column etc.):\n  "
            + "\n  ".join(problems)
        )
    return rows


def dry_run(files, cfg: CurateConfig, run_dir: str) -> dict:
    """What a run would do: rows per file (counted as the run counts them: an unreadable or
    empty file is one reject row), the longest responses and their rough cost, the plan."""
    rows, longest = {}, []
    column = cfg.response_column
    for _, uri, _ in files:
        n = 0
        try:
            for chunk in read_rows(uri, cfg.input_format, [column], 4096):
                n += len(chunk)
                for index, rec in chunk:
                    text = rec.get(column) if isinstance(rec, dict) else None
                    if isinstance(text, str):
                        longest = heapq.nlargest(5, [*longest, (len(text), f"{uri}#{index}")])
            rows[redact(uri)] = n or 1
        except Exception as err:  # noqa: BLE001
            rows[redact(uri)] = n + 1
            LOG.info(f"{uri}: unreadable from row {n} on: {type(err).__name__}: {err}")
    cached = _dry_run_cache(files, cfg) if cfg.cache else {}
    # ~4 characters a token; each response token is computed about (1 + reuse) times
    reuse = sum(min(w.k + 1, 8) if w.k is not None else 8 for w in cfg.score.windows)
    return {
        "dry_run": True,
        "run_dir": redact(run_dir),
        "input_files": rows,
        "input_rows": sum(rows.values()),
        **cached,
        "longest_responses": [
            {"source": redact(src), "chars": n, "rough_model_tokens": n // 4 * (1 + reuse)}
            for n, src in longest
        ],
        "plan": {
            "student": cfg.score.student or DEFAULT_STUDENT,
            "windows": [w.name for w in cfg.score.windows],
            "segmenter": cfg.score.segmenter,
            "actors": cfg.actors,
            "gpus_per_actor": cfg.gpus_per_actor,
            "call_tokens": cfg.call_tokens,
            "select_by": cfg.select_by,
            "sample_steps": cfg.score.sample_steps,
            "race_z": cfg.race_z if racing(cfg) else None,  # the exact pass after sampling
            "already_done_files": len(completed_files(committed_chunks(run_dir, clean=False))),
        },
    }


def _dry_run_cache(files, cfg: CurateConfig) -> dict:
    """Rows the cache holds and rows the student would score (rows read and validated as
    the run reads them; the cache's keys held here, 16 bytes a row)."""
    import pyarrow as pa

    from .cache import Lookup, row_keys
    from .pipeline import read_files

    ns, parts = open_namespace(cfg, identify_student(cfg), write=False)
    lookup = Lookup(parts, cfg)
    hits = valid = 0
    for index, uri, root in files:
        batch = pa.Table.from_pylist([{"file_index": index, "uri": uri, "root": root, "skip": []}])
        for piece in read_files(batch, cfg):
            found, _ = lookup.find(row_keys(piece))
            hits += int(found.sum())
            valid += piece.column("reject_reason").null_count  # null: not rejected
    return {
        "cache": redact(ns),
        "cache_parts": len(parts),
        "cache_hits": hits,
        "rows_to_score": valid - hits,
    }


def total_rows(todo, file_rows: dict, chunks: dict) -> int | None:
    """Rows left to do, for the progress line's ETA: the Parquet footers' counts (from
    `check_columns`); with any JSONL or unreadable input the total is unknown."""
    counts = [file_rows.get(i) for i, _, _ in todo]
    if None in counts:
        return None
    n = sum(counts)
    todo_files = {i for i, _, _ in todo}
    done = sum(c["scored"] + c["rejected"] for (f, _), c in chunks.items() if f in todo_files)
    return max(n - done, 0) or None


def stream(
    todo,
    cfg: CurateConfig,
    run_dir: str,
    skip: dict,
    rows: int | None,
    cache=None,
    only: dict | None = None,
):
    """Run the Ray pipeline over the files to do; commit each chunk of rows as soon as all
    its rows are written. `rows`: how many, for the ETA; `only`: racing's exact pass (see
    `pipeline.build`). Returns the response tokens scored (cache hits not counted)."""
    from .pipeline import build

    start_ray(cfg)
    wait_for_gpus(cfg)
    if cfg.score.student is None:
        from ..scoring.student import default_student_dir

        default_student_dir()  # convert once here, not in every actor at the same time
    written: dict[tuple[int, int], dict] = {}
    totals: dict[tuple[int, int], tuple[int, bool]] = {}
    have = {i: set(skip.get(i, ())) for i, _, _ in todo}  # committed chunks per file
    ends: dict[int, int] = {}  # file -> its last chunk, once seen
    uris = {i: uri for i, uri, _ in todo}
    tokens = 0
    calls: dict[str, tuple[int, int, str]] = {}  # call id -> (rows, est. tokens, actor)
    graph = build(todo, cfg, run_dir, skip, cache, only)
    batches = graph.iter_batches(batch_size=None, batch_format="pyarrow")
    with native_noise_dropped(cfg.verbose), Progress(len(todo), rows, LOG.info) as progress:
        for batch in batches:
            for row in batch.to_pylist():
                key = (row["file_index"], row["chunk"])
                calls[row["call_id"]] = (row["call_rows"], row["call_tokens"], row["actor"])
                acc = written.setdefault(
                    key,
                    {
                        "scored": 0,
                        "rejected": 0,
                        "reused": 0,
                        "response_tokens": 0,
                        "oom_splits": 0,
                        "parts": [],
                    },
                )
                for name in acc:
                    acc[name] += row[name]
                tokens += row["response_tokens"]
                progress.add(row["scored"], row["rejected"], row["response_tokens"], row["reused"])
                if row["chunk_rows"] is not None:
                    totals[key] = (row["chunk_rows"], bool(row["last"]))
                if key in totals and acc["scored"] + acc["rejected"] == totals[key][0]:
                    last = totals[key][1]
                    with uninterrupted():
                        record = {"last": last, **acc, "committed_unix": time.time()}
                        commit_chunk(run_dir, *key, uris[key[0]], record)
                    f, c = key
                    have[f].add(c)
                    if last:
                        ends[f] = c
                    if f in ends and len(have[f]) == ends[f] + 1:
                        progress.done_files += 1
                        del ends[f]
    return tokens, calls
