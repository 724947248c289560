"""`--dry-run`: what a run would do, with no model weights loaded and nothing written: rows
per file (as the run counts them: an unreadable or empty file is one reject row), the model
tokens the student would run (the scorer's own plan of each row, from the student's
tokenizer), the longest responses, what the score cache holds of them, the plan."""

from __future__ import annotations

import heapq
import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...redact import redact
from ...scoring.student import DEFAULT_STUDENT
from ..cache.keys import KEY, as_numpy, member
from ..cache.namespace import index_whole, row_keys, view
from ..cache.score_cache import ScoreCache
from ..choose.racing import races
from ..choose.ranking import block_size
from ..inputs.chunks import read_files
from ..inputs.plan import InputError, InputPlan, file_groups
from ..job_config import CurateConfig
from ..run.cost import Predictor
from ..run.identity import StudentError
from ..run.outputs import committed_chunks, completed_files
from ..run.student_checks import identify_student
from ..storage import filesystem, join

EXACT_ROWS = 20_000  # up to this many rows, every one is tokenized for the prediction
SAMPLE_ROWS = 2000  # beyond it, a sample of this many rows is


def dry_run(plan: InputPlan, cfg: CurateConfig, run_dir: str) -> dict:
    try:
        student = identify_student(cfg)
        predictor = Predictor(cfg.calling, student)
    except (StudentError, InputError, OSError, ValueError) as err:  # no student: no tokens
        student = predictor = None
        cost = {"model_tokens": None, "model_tokens_unknown": str(err)}
    exact = predictor is not None and sum(n or 0 for n in plan.rows.values()) <= EXACT_ROWS
    rows, longest, keys, tokens = {}, [], [], 0
    sample, prompts = _Reservoir(SAMPLE_ROWS, cfg.seed), set()
    for group in file_groups([plan.sizes.get(i) for i, _, _ in plan.files]):
        valid = []
        for index, uri, root in plan.files[group]:
            n = 0
            for piece in read_files([{"file_index": index, "uri": uri, "root": root}], cfg.reading):
                n += piece.num_rows
                if cfg.cache:
                    keys.append(as_numpy(row_keys(piece)))  # valid rows only
                ok = piece.filter(pc.is_null(piece.column("reject_reason")))
                prompts.update(ok.column("prompt_key").to_pylist())
                for row in ok.select(["source", "prompt", "response", "steps_json"]).to_pylist():
                    steps = row.pop("steps_json")
                    row["steps"] = None if steps is None else json.loads(steps)
                    (valid.append if exact else sample.add)(row)
                    longest = heapq.nlargest(5, [*longest, (len(row["response"]), row["source"])])
            rows[redact(uri)] = n
        if exact:
            tokens += predictor.group(valid)
    if exact:
        cost = {"model_tokens": tokens, "model_tokens_from": "every row, packed into calls"}
    elif predictor is not None:
        cost = _sampled(predictor, sample, len(prompts))
    return {
        "dry_run": True,
        "run_dir": redact(run_dir),
        "input_files": rows,
        "input_rows": sum(rows.values()),
        **cost,
        **(_cache(cfg, student, keys) if cfg.cache and student else {}),
        "longest_responses": [{"source": redact(src), "chars": n} for n, src in longest],
        "plan": _plan(cfg, run_dir, len(prompts)),
    }


def _plan(cfg: CurateConfig, run_dir: str, n_prompts: int) -> dict:
    """The settings that decide what the run would do."""
    return {
        "student": cfg.score.student or DEFAULT_STUDENT,
        "windows": [w.name for w in cfg.score.windows],
        "segmenter": cfg.score.segmenter,
        "actors": cfg.actors,
        "gpus_per_actor": cfg.gpus_per_actor,
        "call_tokens": cfg.call_tokens,
        "select_by": cfg.select_by,
        "sample_steps": cfg.score.sample_steps,
        # racing's rounds after the sampled pass: their tokens depend on its outcome
        "race": (
            {"epsilon": cfg.race_epsilon, "delta": cfg.race_delta}
            if races(cfg.choosing, cfg.score)
            else None
        ),
        # a ranking's blocks: the predicted model_tokens are every prompt's, a ranking's most
        "rank": {
            "prompts": n_prompts,
            "block_prompts": block_size(cfg, n_prompts),
            "max_prompts": cfg.max_prompts,
            "delta": cfg.rank_delta,
        }
        if cfg.rank_teachers
        else None,
        "already_done_files": len(completed_files(committed_chunks(run_dir, clean=False))),
    }


class _Reservoir:
    """A seeded uniform sample of at most `size` rows of a stream, and the stream's total
    response characters (to scale what the sample costs to the whole)."""

    def __init__(self, size: int, seed: int):
        self.size, self.rng = size, np.random.default_rng(seed)
        self.rows: list[dict] = []
        self.seen = self.chars = 0

    def add(self, row: dict) -> None:
        self.seen += 1
        self.chars += len(row["response"])
        if len(self.rows) < self.size:
            self.rows.append(row)
        else:
            at = int(self.rng.integers(0, self.seen))
            if at < self.size:
                self.rows[at] = row


def _sampled(predictor: Predictor, sample: _Reservoir, n_prompts: int) -> dict:
    """Over EXACT_ROWS rows: the sample's segment tokens scaled by the responses'
    characters, and each prompt once at the sample's mean (a prompt whose answers fall in
    several calls runs once per call: an estimate, not the scorer's count)."""
    segments, prompt_tokens = 0, {}
    for row in sample.rows:
        seg, n_prompt = predictor.row(row)
        segments += seg
        prompt_tokens[row["prompt"]] = n_prompt
    chars = sum(len(row["response"]) for row in sample.rows)
    per_prompt = sum(prompt_tokens.values()) / max(len(prompt_tokens), 1)
    return {
        "model_tokens": round(segments * sample.chars / max(chars, 1) + per_prompt * n_prompts),
        "model_tokens_from": f"a sample of {len(sample.rows)} rows",
    }


def _cache(cfg: CurateConfig, student, keys: list) -> dict:
    """Rows the cache holds and rows the student would score (rows read and validated as the
    run reads them). The driver holds the inputs' keys, never the cache's: each of the
    cache's key columns is streamed past them."""
    ns, columns = ScoreCache.of(cfg, student).located()
    current = view(ns, columns)
    wanted = np.concatenate(keys) if keys else np.empty(0, "S16")
    unique, inverse = np.unique(wanted, return_inverse=True)
    held = np.zeros(len(unique), bool)
    for batch in _cache_keys(current):
        found, at = member(batch, unique)
        held[at[found]] = True
    hits = int(held[inverse].sum())
    return {
        "cache": redact(ns),
        "cache_generation": (current.generation or {}).get("generation", 0),
        "cache_parts": len(current.parts),
        "cache_hits": hits,
        "rows_to_score": len(wanted) - hits,
    }


def _cache_keys(current):
    """The keys of a cache view, a batch at a time: its index by row group (or, when the
    index is broken or a data file bad, the usable data files' keys), then its parts."""
    gen, ns = current.generation, current.namespace
    uris = []
    if gen and not current.bad_files and index_whole(ns, gen):
        uris = [join(ns, gen["index"])]
    elif gen:
        files = enumerate(gen["files"])
        uris = [join(ns, name) for i, (name, _) in files if i not in current.bad_files]
    for uri in uris + current.parts:
        fs, path = filesystem(uri)
        with fs.open_input_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=65_536, columns=[KEY]):
                yield as_numpy(batch.column(0))
