"""Column contracts of the job's outputs, by name, defined once."""

from __future__ import annotations

from ..scoring.config import ScoreConfig
from ..scoring.schema import result_schema

# Identity of a working row, carried from the reader to scores/ (README "Outputs").
ID_COLUMNS = [
    "row_id",
    "source",
    "file_index",
    "prompt_id",
    "teacher",
    "is_correct",
    "content_hash",
]
REJECT_COLUMNS = [*ID_COLUMNS[:6], "prompt", "response", "reject_reason"]
# What the reduce reads back from scores/: compact, no per-step arrays.
REDUCE_COLUMNS = [*ID_COLUMNS, "local_nat", "global_nat", "n_response_tokens"]
# What selection adds to an input row in selected/.
SELECTED_COLUMNS = ["row_id", "local_nat", "global_nat", "n_candidates", "selected_by"]
# The scorer's per-row status columns; the job turns them into reject_reason.
STATUS_COLUMNS = ("status", "error")


def result_columns(score: ScoreConfig) -> list[str]:
    """The scorer's value columns (all but status/error), in order."""
    return [n for n in result_schema(score.windows).names if n not in STATUS_COLUMNS]


def score_columns(score: ScoreConfig) -> list[str]:
    return ID_COLUMNS + result_columns(score)
