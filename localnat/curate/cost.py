"""What a row costs the student, in model tokens: one model for packing rows into calls (the
work of an actor call is bounded by tokens, never by rows) and for the dry run's estimate."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from ..scoring.windows import Window


def row_cost(n_prompt: int, n_response: int, n_steps: int, windows: Sequence[Window]) -> int:
    """The prompt, the global pass, and each response token again as target or context of
    the windows that hold it: about k+1 times for a fixed k, w*p/2+1 for a fraction w, at
    most the number of steps p, per window setting."""
    reuse = sum(
        min(w.k + 1 if w.k is not None else w.w * n_steps / 2 + 1, n_steps) for w in windows
    )
    return int(n_prompt + n_response * (1 + reuse))


def row_costs(table: pa.Table, windows: Sequence[Window]) -> list[int]:
    """`row_cost` of each tokenized row (`prompt_ids`, `bounds`); a rejected row costs 0."""
    out = []
    prompts = table.column("prompt_ids").to_pylist()
    for prompt, bounds in zip(prompts, table.column("bounds").to_pylist()):
        out.append(
            0 if bounds is None else row_cost(len(prompt), bounds[-1], len(bounds) - 1, windows)
        )
    return out
