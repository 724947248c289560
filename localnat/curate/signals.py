"""Column contracts of the job's outputs, by name, defined once."""

from __future__ import annotations

from dataclasses import dataclass

from ..scoring.config import ScoreConfig
from ..scoring.schema import result_schema

# Identity of a working row, carried from the reader to scores/ (README "Outputs"). A row is
# found again by (file_index, row_number), never by parsing `source` ("uri#row", for people).
ID_COLUMNS = [
    "row_id",
    "source",
    "file_index",
    "row_number",
    "prompt_id",
    "teacher",
    "is_correct",
    "content_hash",
    "prompt_key",  # a hash of the prompt text: two texts under one prompt_id never compete
]
REJECT_COLUMNS = [
    *("row_id", "source", "file_index", "row_number", "prompt_id", "teacher", "is_correct"),
    *("prompt", "response", "reject_reason"),
]


# What the reduce reads back from scores/: compact, no per-step arrays.
@dataclass(frozen=True)
class Signal:
    """A per-row student signal the leaderboard reports per teacher (docs/method.md §5, §7)."""

    column: str
    higher_is_better: bool  # rank 1, a win and selection go to the better end
    title: str
    axis: str


# Keyed as in teachers.json; "local" first: it orders the reports.
SIGNALS = {
    "local": Signal(
        "local_nat", True, "local naturalness", "mean of step log-probs (higher = more natural)"
    ),
    "global": Signal(
        "global_nat", True, "global naturalness", "mean log-prob per token (higher = more natural)"
    ),
    "rsr": Signal(
        "rsr",
        False,
        "rank-surprisal ratio",
        "sum of ranks (clipped at 100) / sum of surprisals (lower = more suitable)",
    ),
    "entropy": Signal(
        "global_entropy",
        False,
        "next-token entropy",
        "mean entropy per token, nats (lower = student more certain)",
    ),
    "local_nofirst": Signal(
        "local_nofirst",
        True,
        "local naturalness without first tokens",
        "LN, each step's first token left out (ASLEC-DROP; higher = more natural)",
    ),
    "global_nofirst": Signal(
        "global_nofirst",
        True,
        "global naturalness without first tokens",
        "GN, each step's first token left out (higher = more natural)",
    ),
    "length": Signal(
        "n_response_tokens",
        True,
        "length",
        "response tokens (a baseline that knows nothing of the student: longer first)",
    ),
}
REDUCE_COLUMNS = list(
    dict.fromkeys(
        [
            # `source` is text per row, the largest column at a million rows: a row is found
            # by (file_index, row_number) and its source made only where it is shown
            *(c for c in ID_COLUMNS if c != "source"),
            *(s.column for s in SIGNALS.values()),
            "local_nat_se",  # racing's bounds (0 when exact)
            "local_nat_df",  # and their degrees of freedom
            "n_response_tokens",
            "rank_sum",  # the teacher's dataset-level RSR (§7)
            "surprisal_sum",
        ]
    )
)
# What selection adds to an input row in selected/.
SELECTED_COLUMNS = [
    "row_id",
    *dict.fromkeys(s.column for s in SIGNALS.values()),
    "n_candidates",
    "selected_by",
    "settled_by",  # under step sampling: whether the sample or the exact pass chose (§5.2)
]
# What a racing round gives per row (its cache holds these), and writes under
# race/rTT/scores/ (docs/method.md §5.2).
ROUND_RESULTS = ["n_response_tokens", "round_steps", "round_scores", "step_strata"]
ROUND_COLUMNS = ["row_id", "content_hash", *ROUND_RESULTS]
# The scorer's per-row status columns; the job turns them into reject_reason.
STATUS_COLUMNS = ("status", "error")


def result_columns(score: ScoreConfig) -> list[str]:
    """The scorer's value columns (all but status/error), in order."""
    return [n for n in result_schema(score.windows).names if n not in STATUS_COLUMNS]


def score_columns(score: ScoreConfig) -> list[str]:
    return ID_COLUMNS + result_columns(score)


def number(x, digits: int = 3) -> str:
    """A signal's figure as the reports print it: fixed digits, `n/a` where there is none."""
    return "n/a" if x is None else f"{x:.{digits}f}"
