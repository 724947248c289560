"""Segmentation of a response into steps, and the token-to-step rule (docs/method.md §2, §3).

Every function returns character spans [(start, end), ...] that tile the text: consecutive,
non-overlapping, first start 0, last end len(text). Whitespace trails the step it follows.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

import numpy as np

# Inline `$..$` follows pandoc's rule so that prices ("$5. Then $3") are not read as math:
# the opener is not followed by whitespace, the closer is not preceded by whitespace nor
# followed by a digit, and inline math does not cross a newline. `\$` is a literal dollar.
_MATH = re.compile(
    r"\$\$.+?\$\$"
    r"|\\\[.+?\\\]"
    r"|\\\(.+?\\\)"
    r"|(?<!\\)\$(?=[^\s$])[^$\n]*?(?<=[^\s\\])\$(?!\d)",
    re.S,
)
_WS_RUN = re.compile(r"\s+")
_CLOSERS = "\"')]}\u201d\u2019\u00bb"
_ABBREVIATIONS = ("e.g.", "i.e.")
MIN_STEP_CHARS = 4


def segment(text: str, segmenter: str, given: Sequence | None = None) -> list[tuple[int, int]]:
    """Cut `text` into step spans with the named segmenter (`given` for `column:NAME`)."""
    if segmenter == "sentence":
        return sentence_spans(text)
    if segmenter == "line":
        return _spans_from_starts(text, _ws_run_ends(text, lambda run, _: _newlines(run) >= 1))
    if segmenter == "paragraph":
        return _spans_from_starts(text, _ws_run_ends(text, lambda run, _: _newlines(run) >= 2))
    if segmenter.startswith("column:"):
        return given_spans(text, given)
    raise ValueError(f"unknown segmenter {segmenter!r}")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    math = [m.span() for m in _MATH.finditer(text)]
    math_starts = [s for s, _ in math]

    def in_math(pos: int) -> bool:
        i = bisect.bisect_right(math_starts, pos) - 1
        return i >= 0 and math[i][0] <= pos < math[i][1]

    def is_boundary(run: str, run_start: int) -> bool:
        if in_math(run_start):
            return False
        if _newlines(run):
            return True
        j = run_start - 1
        while j >= 0 and text[j] in _CLOSERS:
            j -= 1
        if j < 0 or text[j] not in ".!?":
            return False
        if text[j] == ".":
            word = text[max(0, j - 3) : j + 1].lower()
            before = text[j - 4] if j >= 4 else " "
            if word in _ABBREVIATIONS and not before.isalnum():
                return False
        return True

    spans = _spans_from_starts(text, _ws_run_ends(text, is_boundary))
    return _merge_short(text, spans)


def given_spans(text: str, given: Sequence | None) -> list[tuple[int, int]]:
    """Spans from steps supplied per row: strings that concatenate to `text` up to whitespace,
    or ascending character offsets where steps start."""
    if not isinstance(given, (list, tuple, np.ndarray)) or len(given) == 0:
        raise ValueError("step column must hold a non-empty list of strings or start offsets")
    if all(isinstance(g, (int, np.integer)) and not isinstance(g, bool) for g in given):
        offsets = [int(g) for g in given]
        if offsets != sorted(set(offsets)) or offsets[0] < 0 or offsets[-1] >= len(text):
            raise ValueError("step offsets must be strictly ascending and within the response")
        return _spans_from_starts(text, [o for o in offsets if o > 0])
    if not all(isinstance(g, str) for g in given):
        raise ValueError("step column must hold only strings or only integer offsets")
    starts, pos = [], 0
    for n, step in enumerate(given):
        chars = [c for c in step if not c.isspace()]
        if not chars:
            continue
        while pos < len(text) and text[pos].isspace():
            pos += 1
        starts.append(pos)
        for c in chars:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text) or text[pos] != c:
                raise ValueError(f"step {n} does not match the response at character {pos}")
            pos += 1
    if text[pos:].strip():
        raise ValueError(f"steps end at character {pos} but the response goes on")
    if not starts:
        raise ValueError("all given steps are empty")
    return _spans_from_starts(text, starts[1:])


def assign_tokens(
    text: str, offsets: Sequence[tuple[int, int]], spans: list[tuple[int, int]]
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Apply the token-to-step rule; drop steps that get no token.

    A token belongs to the step holding its first non-whitespace character (whitespace-only
    tokens: the step where they start). A step with no token merges into the next step (the
    last one into the previous), so the returned spans still tile the text.

    Returns:
        bounds: [n_steps + 1] token offsets; step i holds tokens bounds[i]:bounds[i+1].
        spans: the character spans of the steps that hold tokens.
    """
    if not offsets:
        raise ValueError("the response has no tokens")
    starts = [s for s, _ in spans]
    last = max(len(text) - 1, 0)
    step_of = np.empty(len(offsets), dtype=np.int64)
    for t, (s, e) in enumerate(offsets):
        pos = s
        while pos < e and text[pos].isspace():
            pos += 1
        if pos >= e:
            pos = s
        step_of[t] = bisect.bisect_right(starts, min(pos, last)) - 1
    # Byte-level tokenizers can give several tokens one offset; order never goes backwards.
    step_of = np.maximum.accumulate(step_of)
    counts = np.bincount(step_of, minlength=len(spans))

    merged, pending = [], None
    for (s, e), n in zip(spans, counts):
        if n == 0:
            pending = s if pending is None else pending
            continue
        merged.append((s if pending is None else pending, e))
        pending = None
    if pending is not None:
        merged[-1] = (merged[-1][0], len(text))
    kept = counts[counts > 0]
    bounds = np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)
    return bounds, merged


def _newlines(run: str) -> int:
    return run.count("\n") + run.replace("\r\n", "").count("\r")


def _ws_run_ends(text: str, is_boundary) -> list[int]:
    """Positions where a whitespace run ends before more text and `is_boundary(run, start)`."""
    return [
        m.end()
        for m in _WS_RUN.finditer(text)
        if m.start() > 0 and m.end() < len(text) and is_boundary(m.group(), m.start())
    ]


def _spans_from_starts(text: str, starts: list[int]) -> list[tuple[int, int]]:
    cuts = [0, *starts, len(text)]
    return [(cuts[i], cuts[i + 1]) for i in range(len(cuts) - 1)]


def _merge_short(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Fragments with < MIN_STEP_CHARS non-whitespace characters join the following step."""
    out, pending = [], None
    for s, e in spans:
        start = s if pending is None else pending
        if sum(not c.isspace() for c in text[s:e]) >= MIN_STEP_CHARS:
            out.append((start, e))
            pending = None
        else:
            pending = start
    if pending is not None:
        if out:
            out[-1] = (out[-1][0], len(text))
        else:
            out.append((pending, len(text)))
    return out
