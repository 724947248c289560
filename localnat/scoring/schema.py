"""The columns of a score table: pyarrow only, so that readers of scores (the reduce, the
selection tasks) never import torch."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from .windows import Window

# What the numbers mean: bumped by any change to what a score of the same student, settings
# and text comes out as (segmentation, the token-to-step rule, windows, the math, the
# columns). It is in the score cache's namespace and a run's identity, so an upgrade that
# changes a number never reuses a number of the version before; tests/scoring/
# test_scoring_version.py fails when the reference's outputs move without a bump.
SCORING_VERSION = 4


def result_schema(windows: Sequence[Window]) -> pa.Schema:
    """Columns of a score table, in order."""
    return pa.schema(
        [
            ("status", pa.string()),
            ("error", pa.string()),
            ("global_nat", pa.float64()),
            ("rsr", pa.float64()),
            ("global_entropy", pa.float64()),
            ("local_nofirst", pa.float64()),
            ("global_nofirst", pa.float64()),
            ("rank_sum", pa.float64()),
            ("surprisal_sum", pa.float64()),
            ("local_nat", pa.float64()),
            ("local_nat_se", pa.float64()),
            ("local_nat_df", pa.float64()),
            ("steps_scored", pa.int64()),
            *[(f"local_nat_{w.name}", pa.float64()) for w in windows],
            ("step_starts", pa.list_(pa.int64())),
            ("step_ends", pa.list_(pa.int64())),
            ("step_tokens", pa.list_(pa.int32())),
            ("step_logprobs", pa.list_(pa.float64())),
            ("step_global_logprobs", pa.list_(pa.float64())),
            ("n_prompt_tokens", pa.int64()),
            ("n_response_tokens", pa.int64()),
            ("n_steps", pa.int64()),
            ("global_truncated", pa.bool_()),
            ("window_truncated", pa.bool_()),
        ]
    )


# `Scorer.score_round`: a racing round's newly sampled steps (docs/method.md §5.2)
ROUND_SCHEMA = pa.schema(
    [
        ("status", pa.string()),
        ("error", pa.string()),
        ("n_response_tokens", pa.int64()),
        ("round_steps", pa.list_(pa.int32())),
        ("round_scores", pa.list_(pa.float64())),
        ("step_strata", pa.list_(pa.int32())),
    ]
)
