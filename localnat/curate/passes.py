"""Scoring passes, declared: which rows, which scorer method, which columns, which directory.
The Ray graph (graph.py) runs a pass; the run (run.py) commits and resumes it.

    scores  every row of every input file, whole: the first pass of every run
    race    racing's exact pass (docs/method.md §5.2): the listed rows, only the steps their
            samples left out; into race/ under the run
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ..scoring.schema import UNSAMPLED_SCHEMA, result_schema
from .columns import ID_COLUMNS, UNSAMPLED_COLUMNS, UNSAMPLED_RESULTS, result_columns
from .config import CurateConfig
from .storage import join


@dataclass(frozen=True)
class Pass:
    """One scoring pass.

    Attributes:
        name: "scores" or "race".
        directory: where its scores/, rejects/ and _done/ live.
        method: the `Scorer` method that scores a call ("score_prepared", "score_unsampled").
        schema: what that method returns per row (status, error, results).
        results: its value columns: what the score cache holds and a hit carries.
        columns: what scores/ keeps of a row (identity and results).
        rows: file index -> the row numbers to read; None: every row of every file.
        identity: what a resume of this pass must match besides the run's identity (None:
            the run's alone).
    """

    name: str
    directory: str
    method: str
    schema: pa.Schema
    results: tuple[str, ...]
    columns: tuple[str, ...]
    rows: dict[int, list[int]] | None = None
    identity: dict | None = None


def scores_pass(cfg: CurateConfig, run_dir: str) -> Pass:
    results = tuple(result_columns(cfg.score))
    return Pass(
        "scores",
        run_dir,
        "score_prepared",
        result_schema(cfg.score.windows),
        results,
        (*ID_COLUMNS, *results),
    )


def race_pass(run_dir: str, rows: dict[int, list[int]], identity: dict) -> Pass:
    """`rows`: the survivors to rescore; `identity`: their z and rows (another z or another
    set of survivors starts race/ again)."""
    return Pass(
        "race",
        join(run_dir, "race"),
        "score_unsampled",
        UNSAMPLED_SCHEMA,
        tuple(UNSAMPLED_RESULTS),
        tuple(UNSAMPLED_COLUMNS),
        rows,
        identity,
    )
