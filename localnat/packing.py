"""Pack segments into rows that share their prompt, and rows into token-budget batches.

One packed row, for segments S1, S2 of the same prompt (P prompt tokens):

    position ids:  0 1 .. P-1 | P P+1 .. P+n1-1 | P P+1 .. P+n2-1
    tokens:        prompt     | S1 tokens       | S2 tokens
    attends to:    prompt     | prompt + S1     | prompt + S2       (causal inside each)

so every segment is computed exactly as if it were a fresh sequence after the prompt, and
the prompt is computed once per row. The first token of a segment is predicted by the last
prompt token (row index P-1); any later token by the token before it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np

PROMPT = -1  # segment id of prompt tokens
PAD = -2  # segment id of padding


@dataclass
class Segment:
    """One forward's worth of work: prompt + tokens, scoring tokens[score_from:]."""

    key: Hashable  # where its log-probs go
    group: Hashable  # segments share a row only within a group (same prompt tokens)
    prompt: np.ndarray  # [P] int64
    tokens: np.ndarray  # [n] int64
    score_from: int

    @property
    def n_scored(self) -> int:
        return len(self.tokens) - self.score_from


@dataclass
class Row:
    """A packed row: prompt then segments. `predictor[j]` is the row index whose hidden
    state predicts scored token `targets[j]`; `parts` maps scored tokens back to keys."""

    input_ids: np.ndarray  # [L]
    positions: np.ndarray  # [L]
    segment_ids: np.ndarray  # [L]
    predictor: np.ndarray  # [n_scored]
    targets: np.ndarray  # [n_scored]
    parts: list[tuple[Hashable, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


def pack_rows(segments: list[Segment], pack_tokens: int) -> list[Row]:
    """First-fit-decreasing packing of each group's segments into rows of <= pack_tokens
    tokens (a segment that alone exceeds it gets a row of its own)."""
    by_group: dict[Hashable, list[Segment]] = defaultdict(list)
    for seg in segments:
        by_group[seg.group].append(seg)
    rows = []
    for group in by_group.values():
        group.sort(key=lambda s: len(s.tokens), reverse=True)
        n_prompt = len(group[0].prompt)
        bins: list[list[Segment]] = []
        free: list[int] = []
        for seg in group:
            for j, room in enumerate(free):
                if len(seg.tokens) <= room:
                    bins[j].append(seg)
                    free[j] -= len(seg.tokens)
                    break
            else:
                bins.append([seg])
                free.append(pack_tokens - n_prompt - len(seg.tokens))
        rows.extend(_build_row(b) for b in bins)
    return rows


def _build_row(segs: list[Segment]) -> Row:
    prompt = segs[0].prompt
    n_prompt = len(prompt)
    ids, pos, sid = [prompt], [np.arange(n_prompt)], [np.full(n_prompt, PROMPT)]
    predictor, targets, parts = [], [], []
    offset = n_prompt
    for s_idx, seg in enumerate(segs):
        n = len(seg.tokens)
        ids.append(seg.tokens)
        pos.append(np.arange(n_prompt, n_prompt + n))
        sid.append(np.full(n, s_idx))
        scored = np.arange(seg.score_from, n)
        # token j of the segment sits at row index offset + j; its predictor is offset + j - 1,
        # except j == 0, predicted by the last prompt token.
        predictor.append(np.where(scored == 0, n_prompt - 1, offset + scored - 1))
        targets.append(seg.tokens[seg.score_from :])
        parts.append((seg.key, seg.n_scored))
        offset += n
    cat = np.concatenate
    return Row(
        cat(ids).astype(np.int64),
        cat(pos).astype(np.int64),
        cat(sid).astype(np.int64),
        cat(predictor).astype(np.int64),
        cat(targets).astype(np.int64),
        parts,
    )


def make_batches(rows: list[Row], batch_tokens: int) -> list[list[Row]]:
    """Longest rows first (an out-of-memory shows at once), each batch padded to its first
    row's length and holding at most batch_tokens padded tokens (one row at least)."""
    rows = sorted(rows, key=len, reverse=True)
    batches, current = [], []
    for row in rows:
        if current and (len(current) + 1) * len(current[0]) > batch_tokens:
            batches.append(current)
            current = []
        current.append(row)
    if current:
        batches.append(current)
    return batches
