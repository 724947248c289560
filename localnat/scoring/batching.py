"""Group segments into token-budget batches, longest first.

A segment is one forward's worth of work: its prompt (computed once per prompt, kept as a
key/value cache) followed by response tokens, of which tokens[score_from:] are scored.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

GLOBAL = "global"  # the global pass's key in a row's segments, beside the windows' context starts


@dataclass
class Segment:
    key: Hashable  # where its log-probs go
    group: Hashable  # its prompt: segments of one group share one prompt cache
    prompt: np.ndarray  # [P] int64
    tokens: np.ndarray  # [n] int64
    score_from: int
    signals: bool = False  # rank and entropy per token as well (the global pass's)
    global_pass: bool = False  # batched apart from the windows

    @property
    def n_scored(self) -> int:
        return len(self.tokens) - self.score_from


def make_batches(segments: list[Segment], batch_tokens: int) -> list[list[Segment]]:
    """The global passes, then the windows, each batched apart: a window's batch, and with
    it the float sums of its numbers, is the same whether the global pass runs or not (LN is
    bit-identical across signals: docs/method.md §9). Longest first (an out-of-memory shows
    at once), each batch padded to its first segment's length and holding at most
    batch_tokens padded tokens (one segment at least). Sorting by length keeps the padding
    small."""
    whole = [s for s in segments if s.global_pass]
    windows = [s for s in segments if not s.global_pass]
    return _by_length(whole, batch_tokens) + _by_length(windows, batch_tokens)


def _by_length(segments: list[Segment], batch_tokens: int) -> list[list[Segment]]:
    segments = sorted(segments, key=lambda s: len(s.tokens), reverse=True)
    batches, current = [], []
    for seg in segments:
        if current and (len(current) + 1) * len(current[0].tokens) > batch_tokens:
            batches.append(current)
            current = []
        current.append(seg)
    if current:
        batches.append(current)
    return batches


def shared_prompts(batches: list[list[Segment]]) -> dict:
    """The prompts a call computes once as key/value caches: those of segments that share a
    batch (a segment batched alone runs with its prompt inline). Group -> prompt ids."""
    return {seg.group: seg.prompt for batch in batches if len(batch) > 1 for seg in batch}


def forward_cost(batch: list[Segment]) -> tuple[int, int]:
    """(model tokens, padded tokens) one forward of `batch` runs: its segments' tokens, and
    the prompt when the segment runs alone with it inline."""
    inline = len(batch[0].prompt) if len(batch) == 1 else 0
    tokens = sum(len(s.tokens) for s in batch) + inline
    return tokens, len(batch) * max(len(s.tokens) for s in batch) + inline


def call_cost(batches: list[list[Segment]]) -> tuple[int, int]:
    """(model tokens, padded tokens) of a call's batches: the shared prompts once, then every
    forward (`Scorer` counts what it runs by these)."""
    prompts = sum(len(p) for p in shared_prompts(batches).values())
    costs = [forward_cost(batch) for batch in batches]
    return prompts + sum(t for t, _ in costs), prompts + sum(p for _, p in costs)
