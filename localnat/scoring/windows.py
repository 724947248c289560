"""Window planning: which token log-probs each step score needs, and the fewest segments
that produce them all.

Token offsets are into the response's one token sequence. Step i (1-based) holds tokens
bounds[i-1]:bounds[i]. Its window for a setting is

    prompt | tokens of steps first..i-1 | tokens of step i          first = max(1, i - k_i)
             a                            b                  c

and its score needs log p(t | prompt, tokens a..t-1) for t in [b, c): a *piece* (a, b, c).

Causality makes pieces that share a context start `a` answerable by one forward over
prompt + tokens[a:e] with e the largest end among them: the log-prob of token t in that
sequence sees exactly prompt + tokens[a:t]. So pieces are grouped into *segments* keyed by
`a`. This is exact, not an approximation; the tests hold it against a one-forward-per-window
reference.

The pieces with a == 0 (a step near the start, whose window is a prefix of the response) lie
inside the global pass too, but are not read off it: they are segment 0, the *head*, its own
forward. A window's numbers then come from the same forwards whichever signals run (the
global pass runs whole, as far as the windows need, or not at all), so LN is bit-identical
across `--signals` (docs/method.md §9); it costs the head's tokens again when the global pass
runs whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Window:
    """A window setting: a fixed number of preceding steps `k`, or a fraction `w` of them
    (docs/method.md §4)."""

    k: int | None = None
    w: float | None = None

    def __post_init__(self):
        if (self.k is None) == (self.w is None):
            raise ValueError("a window is either a fixed k (int >= 1) or a fraction w in (0, 1]")
        if self.k is not None and (isinstance(self.k, bool) or self.k < 1):
            raise ValueError(f"window k must be an int >= 1, got {self.k!r}")
        if self.w is not None and not (0 < self.w <= 1):
            raise ValueError(f"window fraction w must be in (0, 1], got {self.w!r}")

    @classmethod
    def parse(cls, value: int | float | str | Window) -> Window:
        """Ints are k, floats <= 1 are w: `4`, `"4"`, `"k4"` -> k=4; `0.25`, `"0.25"`,
        `"w0.25"` -> w=0.25; `1.0` / `"1.0"` -> w=1 (every preceding step)."""
        if isinstance(value, Window):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"not a window setting: {value!r}")
        if isinstance(value, int):
            return cls(k=value)
        if isinstance(value, float):
            return cls(k=int(value)) if value > 1 and value.is_integer() else cls(w=value)
        text = value.strip().lower()
        try:
            if text.startswith("k"):
                return cls(k=int(text[1:]))
            if text.startswith("w"):
                return cls(w=float(text[1:]))
            if text.isdigit():
                return cls(k=int(text))
            return cls.parse(float(text))
        except ValueError as err:
            raise ValueError(f"not a window setting: {value!r} ({err})") from None

    def preceding(self, i: int) -> int:
        """Number of preceding steps step i (1-based) may see."""
        if self.k is not None:
            return self.k
        return max(1, math.ceil(self.w * (i - 1)))

    @property
    def name(self) -> str:
        """Column suffix: k=4 -> 'k4', w=0.25 -> 'w25', w=0.125 -> 'w12_5'."""
        if self.k is not None:
            return f"k{self.k}"
        pct = f"{self.w * 100:.6g}".replace(".", "_")
        return f"w{pct}"


Piece = tuple[int, int, int]  # (context start a, target start b, target end c), token offsets


@dataclass
class Plan:
    """What to compute for one response and how to read step scores back.

    Attributes:
        n_keep: response tokens in the global pass (all of them unless truncated).
        segments: the windows' forwards, context start a -> (first scored token, end): the
            forward over prompt + tokens[a:end] scores tokens [first, end). Key 0 is the head.
        pieces: pieces[s][i] lists the pieces whose tokens make up step i+1 under setting s.
        global_pass: whether the global pass (prompt + tokens[:n_keep], every token scored)
            runs.
    """

    n_keep: int
    global_truncated: bool
    window_truncated: bool
    segments: dict[int, tuple[int, int]]
    pieces: list[list[list[Piece]]]
    global_pass: bool = True

    @property
    def tokens(self) -> int:
        """Response tokens its forwards run: every window segment's, and the global pass's."""
        windows = sum(end - a for a, (_, end) in self.segments.items())
        return windows + (self.n_keep if self.global_pass else 0)


def plan_windows(
    bounds: np.ndarray,
    n_prompt: int,
    windows: tuple[Window, ...],
    max_tokens: int,
    max_window_tokens: int,
) -> Plan:
    """Plan the global pass and every local window of one response.

    Args:
        bounds: [n_steps + 1] token offsets of the steps (from `steps.assign_tokens`).
        n_prompt: prompt tokens, shared context of every window.
        windows: the window settings.
        max_tokens: cap on prompt + response for the global pass.
        max_window_tokens: cap on prompt + window; must not exceed max_tokens.

    Raises:
        ValueError: when the prompt alone leaves no room for a response token.
    """
    assert max_window_tokens <= max_tokens, "caller clamps max_window_tokens to max_tokens"
    n_tokens = int(bounds[-1])
    room = max_window_tokens - n_prompt  # response tokens a window may hold
    if room < 1:
        raise ValueError(
            f"prompt has {n_prompt} tokens, leaving no room under max_window_tokens="
            f"{max_window_tokens}"
        )
    n_keep = min(n_tokens, max_tokens - n_prompt)
    truncated = False
    pieces: list[list[list[Piece]]] = []
    for window in windows:
        per_step = []
        for i in range(1, len(bounds)):
            first = max(1, i - window.preceding(i))
            step_pieces, cut = _fit(
                int(bounds[first - 1]), int(bounds[i - 1]), int(bounds[i]), room
            )
            truncated |= cut
            per_step.append(step_pieces)
        pieces.append(per_step)
    plan = Plan(n_keep, n_keep < n_tokens, truncated, {}, pieces)
    return restrict(plan, [np.ones(len(bounds) - 1, dtype=bool)] * len(windows))


def restrict(plan: Plan, keep: list[np.ndarray], global_pass: bool = True) -> Plan:
    """The plan's segments for only the steps `keep[s]` (bool per step) of each setting s,
    and the global pass if `global_pass`. Pieces stay, so `step_means` can read kept steps."""
    segments: dict[int, tuple[int, int]] = {}
    for per_step, kept in zip(plan.pieces, keep):
        for step_pieces in (p for p, k in zip(per_step, kept) if k):
            for a, b, c in step_pieces:
                lo, hi = segments.get(a, (b, c))
                segments[a] = (min(lo, b), max(hi, c))
    return replace(plan, segments=segments, global_pass=global_pass)


def global_only(plan: Plan) -> Plan:
    """The plan's global pass alone: no window (its pieces stay unread)."""
    return replace(plan, segments={}, global_pass=True)


def census(plan: Plan, setting: int) -> np.ndarray:
    """Per step, whether all its pieces start at context 0: the head scores them all in one
    forward, a few steps' tokens."""
    return np.array([all(a == 0 for a, _, _ in p) for p in plan.pieces[setting]], dtype=bool)


def _fit(a: int, b: int, c: int, room: int) -> tuple[list[Piece], bool]:
    """Make window (a, b, c) fit `room` response tokens.

    Too long: keep the target step whole and drop context from the left. A step longer than
    `room` is split into chunks of room // 2 tokens; each chunk keeps as much of the context
    before it (earlier chunks included) as fits, so no chunk is scored blind.
    """
    if c - a <= room:
        return [(a, b, c)], False
    if c - b <= room:
        return [(c - room, b, c)], True
    size = max(1, room // 2)
    ends = [min(s + size, c) for s in range(b, c, size)]
    return [(max(a, e - room), s, e) for s, e in zip(range(b, c, size), ends)], True


def step_means(
    plan: Plan,
    logprobs: dict[int, np.ndarray],
    setting: int,
    keep: np.ndarray | None = None,
    drop_first: bool = False,
) -> np.ndarray:
    """Per-step mean log-prob for one setting, from the segments' scored log-probs; NaN for a
    step not in `keep` (not scored under step sampling). `drop_first`: the mean without the
    step's first token (docs/method.md §5.3; NaN for a one-token step).

    `logprobs[a]` holds the log-probs of tokens segments[a][0] .. segments[a][1] - 1.
    """
    out = np.full(len(plan.pieces[setting]), np.nan)
    for i, step_pieces in enumerate(plan.pieces[setting]):
        if keep is not None and not keep[i]:
            continue
        parts = []
        for a, b, c in step_pieces:
            lo = plan.segments[a][0]
            parts.append(logprobs[a][b - lo : c - lo])
        values = np.concatenate(parts)[1 if drop_first else 0 :]
        if len(values):
            out[i] = values.mean()
    return out


def global_nofirst(plan: Plan, global_logprobs: np.ndarray, bounds: np.ndarray) -> float:
    """GN without each step's first token (docs/method.md §5.3), over the global pass's
    tokens; NaN when no token is left."""
    keep = np.ones(plan.n_keep, bool)
    firsts = bounds[:-1][bounds[:-1] < plan.n_keep]
    keep[firsts] = False
    return float(global_logprobs[keep].mean()) if keep.any() else float("nan")


def global_step_means(plan: Plan, global_logprobs: np.ndarray, bounds: np.ndarray) -> list:
    """Per-step mean log-prob under the global pass (context: prompt + all earlier tokens);
    None for a step the global pass cut off (global_truncated)."""
    out = []
    for b, c in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        c = min(c, plan.n_keep)
        out.append(float(global_logprobs[b:c].mean()) if c > b else None)
    return out
