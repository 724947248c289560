"""Scoring passes, declared: which rows, which scorer method, which columns, which place in
the run's directory. The Ray graph (graph.py) runs a pass; the run (directory.py) puts it
in its directory, commits and resumes it.

    scores   every row of every input file, whole: the first pass of every run
    race-T   racing's round T (docs/method.md §5.2): the listed rows, only the steps their
             samples gained at round T; into race/rTT/ under the run
    rank-B   teacher ranking's block B (docs/method.md §7.2): every row of the block's
             prompts, whole, as the scores pass scores them; into rank/bBBBB/ under the run
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from enum import Enum

import pyarrow as pa

from ...scoring.config import ScoreConfig
from ...scoring.schema import ROUND_SCHEMA, result_schema
from ..signals import ID_COLUMNS, ROUND_COLUMNS, ROUND_RESULTS, result_columns
from ..storage import join


class Method(Enum):
    """What a pass's calls run: a `Scorer` method, by name."""

    SCORE = "score_prepared"  # every signal asked for, of whole rows
    ROUND = "score_round"  # racing's round: the steps new in each row's sample

    def of(self, scorer):
        return getattr(scorer, self.value)


@dataclass(frozen=True)
class Pass:
    """One scoring pass.

    Attributes:
        name: "scores", "race-T" or "rank-B".
        place: where its scores/, rejects/ and _done/ live inside the run's directory
            ("": the run's directory itself).
        method: what scores a call (`Method`), called with `options` as keywords.
        schema: what that method returns per row (status, error, results).
        results: its value columns: what the score cache holds and a hit carries.
        columns: what scores/ keeps of a row (identity and results).
        rows: file index -> the row numbers to read (None: the whole file); None: every row
            of every file.
        identity: what a resume of this pass must match besides the run's identity (None:
            the run's alone).
        seen: what an actor must see before it writes (`nodes.witnesses`), set by the run.
        directory: the place's URI, set by the run (`inside`).
    """

    name: str
    place: str
    method: Method
    schema: pa.Schema
    results: tuple[str, ...]
    columns: tuple[str, ...]
    rows: dict[int, list[int]] | None = None
    identity: dict | None = None
    options: dict = field(default_factory=dict)
    seen: dict = field(default_factory=dict)
    directory: str = ""

    def inside(self, run_dir: str) -> Pass:
        """The pass placed in the run directory `run_dir`."""
        return replace(self, directory=join(run_dir, self.place) if self.place else run_dir)

    @property
    def cache_tag(self) -> str:
        """What sets this pass's cached results apart besides their columns (a round)."""
        return json.dumps(self.options, sort_keys=True) if self.options else ""


def scores_pass(score: ScoreConfig) -> Pass:
    results = tuple(result_columns(score))
    return Pass(
        "scores",
        "",
        Method.SCORE,
        result_schema(score.windows),
        results,
        (*ID_COLUMNS, *results),
    )


def race_pass(round_: int, rows: dict[int, list[int]], identity: dict) -> Pass:
    """Racing's round `round_`: `rows`, the rows still racing; `identity`: the round, the
    race's settings and rows (other ones start race/rTT/ again)."""
    return Pass(
        f"race-{round_}",
        f"race/r{round_:02d}",
        Method.ROUND,
        ROUND_SCHEMA,
        tuple(ROUND_RESULTS),
        tuple(ROUND_COLUMNS),
        rows,
        identity,
        {"round_": round_},
    )


def rank_pass(score: ScoreConfig, block: int, rows: dict) -> Pass:
    """Teacher ranking's block `block`: `rows` (file index -> row numbers, None: the whole
    file), its prompts' rows, scored as the scores pass scores them (so the score cache
    serves both alike). Its identity is its rows: another seed, block size or input starts
    its directory again."""
    digest = hashlib.blake2b(json.dumps(sorted(rows.items())).encode(), digest_size=16)
    return replace(
        scores_pass(score),
        name=f"rank-{block}",
        place=f"rank/b{block:04d}",
        rows=rows,
        identity={"block": block, "rows": digest.hexdigest()},
    )
