"""`--dry-run`: what a run would do, with no student loaded and nothing written: rows per file
(as the run counts them: an unreadable or empty file is one reject row), the longest
responses and their estimated cost, what the score cache holds of them, the plan."""

from __future__ import annotations

import heapq

import numpy as np
import pyarrow.parquet as pq

from ..logs import LOG
from ..redact import redact
from ..scoring.steps import segment
from ..scoring.student import DEFAULT_STUDENT
from .cache import KEY, as_numpy, index_whole, open_namespace, row_keys, view
from .chunks import read_files
from .commit import committed_chunks, completed_files
from .config import CurateConfig
from .cost import row_cost
from .formats import read_rows
from .inputs import Plan
from .racing import racing
from .storage import filesystem, join
from .student import identify_student

CHARS_PER_TOKEN = 4  # a response's tokens, estimated without a tokenizer


def dry_run(plan: Plan, cfg: CurateConfig, run_dir: str) -> dict:
    rows, longest = {}, []
    column = cfg.response_column
    for _, uri, _ in plan.files:
        n = 0
        try:
            for chunk in read_rows(uri, cfg.input_format, [column], 4096):
                n += len(chunk)
                for index, rec in chunk:
                    text = rec.get(column) if isinstance(rec, dict) else None
                    if isinstance(text, str):
                        longest = heapq.nlargest(5, [*longest, (len(text), f"{uri}#{index}", text)])
            rows[redact(uri)] = n or 1
        except Exception as err:  # noqa: BLE001
            rows[redact(uri)] = n + 1
            LOG.warning(f"{uri}: unreadable from row {n} on: {type(err).__name__}: {err}")
    return {
        "dry_run": True,
        "run_dir": redact(run_dir),
        "input_files": rows,
        "input_rows": sum(rows.values()),
        **(_cache(plan, cfg) if cfg.cache else {}),
        "longest_responses": [
            {"source": redact(src), "chars": n, "rough_model_tokens": _cost(text, cfg)}
            for n, src, text in longest
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


def _cost(text: str, cfg: CurateConfig) -> int:
    """The row's cost by the packing's model (cost.py), its tokens estimated from characters
    and its steps from the sentence segmenter when they come from a column."""
    builtin = cfg.score.step_column is None
    steps = len(segment(text, cfg.score.segmenter if builtin else "sentence"))
    return row_cost(0, len(text) // CHARS_PER_TOKEN, steps, cfg.score.windows)


def _cache(plan: Plan, cfg: CurateConfig) -> dict:
    """Rows the cache holds and rows the student would score (rows read and validated as the
    run reads them). The driver holds the inputs' keys, never the cache's: each of the
    cache's key columns is streamed past them."""
    ns, columns = open_namespace(cfg, identify_student(cfg), write=False)
    current = view(ns, columns)
    keys = []
    for index, uri, root in plan.files:
        for piece in read_files([{"file_index": index, "uri": uri, "root": root}], cfg):
            keys.append(as_numpy(row_keys(piece)))  # valid rows only
    wanted = np.concatenate(keys) if keys else np.empty(0, "S16")
    unique, inverse = np.unique(wanted, return_inverse=True)
    held = np.zeros(len(unique), bool)
    for batch in _cache_keys(current):
        at = np.minimum(np.searchsorted(unique, batch), max(len(unique) - 1, 0))
        if len(unique):
            held[at[unique[at] == batch]] = True
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
