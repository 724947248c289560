"""The scorer's typed configuration, validated when built.

Every option is a dataclass field whose metadata holds its flag, help text and choices: the
CLI flags, config-file keys and the README options table are derived from these fields
(`localnat.options`), so an option is defined once. Values are type-checked, never coerced:
a string "false" where a boolean belongs is an error naming the option.
"""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import dataclass, field, fields

SEGMENTERS = ("sentence", "line", "paragraph")
# Attention kernels by their transformers names (`attn_implementation`).
ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")

# What an option can change, declared on its field (`option(affects=...)`): the one list the
# resume identity and the cache namespace both derive from (docs/method.md §10). Options
# that declare neither change speed, placement or the reports, which every run recomputes.
SCORES = "scores"  # a row's scores: the cache namespace and the run identity
ROWS = "rows"  # which rows are scored, rejected or committed together: the run identity


class OptionError(ValueError):
    """An option value of the wrong type or out of range; the message names the option."""


def option(
    default,
    help: str,
    *,
    group: str,
    flag: str | None = None,
    choices=None,
    default_text: str | None = None,
    metavar: str | None = None,
    affects: str | None = None,
):
    """A config field with what the CLI, config files and the README need to know about it.

    `flag` overrides the flag/key name (default: the field name with dashes); `default_text`
    says what a None default means (a policy, e.g. "2048 CPU / 32768 CUDA"); `affects`:
    SCORES or ROWS, what a change of it changes (None: neither)."""
    assert affects in (None, SCORES, ROWS), affects
    meta = {
        "affects": affects,
        "help": help,
        "group": group,
        "flag": flag,
        "choices": choices,
        "default_text": default_text,
        "metavar": metavar,
    }
    return field(default=default, metadata=meta)


def declared(obj, kinds: tuple[str, ...]) -> dict:
    """The fields of a config dataclass whose `affects` is one of `kinds`: name -> value."""
    return {f.name: getattr(obj, f.name) for f in fields(obj) if f.metadata.get("affects") in kinds}


def flag_name(f) -> str:
    return f.metadata.get("flag") or f.name.replace("_", "-")


def check_fields(obj) -> None:
    """Type-check every field of a config dataclass against its annotation (no coercion
    except int -> float and a scalar -> a one-element tuple); normalize tuples in place."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        if "help" not in f.metadata:
            continue
        value = getattr(obj, f.name)
        checked = _check(flag_name(f), value, hints[f.name])
        if checked is not value:
            object.__setattr__(obj, f.name, checked)
        choices = f.metadata.get("choices")
        if choices and checked not in choices:
            raise OptionError(
                f"{flag_name(f)}: must be one of {', '.join(map(str, choices))}, got {checked!r}"
            )


def _check(name: str, value, hint):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if isinstance(value, (str, int, float, Window)) and not isinstance(value, bool):
            value = (value,)
        elif not isinstance(value, (list, tuple)):
            raise OptionError(f"{name}: expected a list, got {_show(value)}")
        return tuple(_check(name, v, args[0]) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise OptionError(f"{name}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f"{name}: expected an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(f"{name}: expected a number, got {_show(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise OptionError(f"{name}: expected a string, got {_show(value)}")
        return value
    if hint is Window:
        try:
            return Window.parse(value)
        except ValueError as err:
            raise OptionError(f"{name}: {err}") from None
    if isinstance(hint, type) and not isinstance(value, hint):
        raise OptionError(f"{name}: expected {hint.__name__}, got {_show(value)}")
    return value


def _show(value) -> str:
    return f"{type(value).__name__} {value!r}"


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


_S = "scoring"


@dataclass(frozen=True)
class ScoreConfig:
    """Everything the scorer needs (docs/method.md); see each field's help."""

    student: str | None = option(
        None,
        "model directory or hub id",
        group=_S,
        default_text="offline SmolLM2-135M-Instruct",
    )
    revision: str | None = option(None, "model revision (hub ids only)", group=_S)
    trust_remote_code: bool = option(
        False,
        "run Python code shipped with the student (only if you trust it)",
        group=_S,
        affects=SCORES,
    )
    windows: tuple[Window, ...] = option(
        (Window(k=4),),
        "window setting, repeatable: `4` preceding steps, `0.25` of the preceding steps, "
        "`1.0` all of them; the first is `local_nat`",
        group=_S,
        affects=SCORES,
        flag="window",
        default_text="4",
        metavar="K|W",
    )
    segmenter: str = option(
        "sentence",
        "`sentence`, `line`, `paragraph` or `column:NAME` (a list of step strings "
        "or start offsets per row)",
        group=_S,
        affects=SCORES,
    )
    system_prompt: str | None = option(
        None, "system message for the chat template", group=_S, affects=SCORES
    )
    device: str = option(
        "auto",
        "`auto`, `cpu`, `cuda` or `cuda:N`; the job uses `cpu` when actors get no GPU",
        group=_S,
    )
    dtype: str = option(
        "auto",
        "bf16 on CUDA, fp32 on CPU when `auto`",
        group=_S,
        affects=SCORES,
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    attn_implementation: str = option(
        "sdpa",
        "attention kernel (transformers' name): `sdpa`, `eager`, or `flash_attention_2` "
        "(opt-in; check it with jobs.benchmark on your GPU). Part of the cache namespace: "
        "kernels round differently (docs/method.md §10)",
        group=_S,
        affects=SCORES,
        choices=ATTENTION,
    )
    max_tokens: int | None = option(
        None,
        "cap on prompt + response for the global pass",
        group=_S,
        affects=SCORES,
        default_text="model context",
    )
    max_window_tokens: int | None = option(
        None,
        "cap on one window, prompt included",
        group=_S,
        affects=SCORES,
        default_text="4096",
    )
    batch_tokens: int | None = option(
        None,
        "padded response tokens per forward pass",
        group=_S,
        default_text="2048 CPU / 32768 CUDA",
    )
    head_chunk: int = option(2048, "scored positions per LM-head chunk", group=_S)
    sample_steps: float | None = option(
        None,
        "score a stratified random sample of this fraction F (0 < F <= 1) of the steps whose "
        "windows are not read off the global pass (at least 4); `local_nat` becomes an "
        "unbiased estimate with `local_nat_se` (docs/method.md §5.2)",
        group=_S,
        affects=SCORES,
        default_text="off: every step, exact",
        metavar="F",
    )
    max_chars: int = option(
        1_000_000, "longer prompts or responses are rejected, not scored", group=_S, affects=ROWS
    )

    def __post_init__(self):
        check_fields(self)
        if not self.windows:
            raise OptionError("window: at least one window setting is required")
        names = [w.name for w in self.windows]
        if len(set(names)) != len(names):
            raise OptionError(f"window: duplicate settings {names}")
        seg = self.segmenter
        if seg not in SEGMENTERS and not (seg.startswith("column:") and len(seg) > 7):
            raise OptionError(
                f"segmenter: unknown {seg!r}: use one of {', '.join(SEGMENTERS)} or column:NAME"
            )
        if not DEVICE.fullmatch(self.device):
            raise OptionError(f"device: must be auto, cpu or cuda[:N], got {self.device!r}")
        for name in ("max_tokens", "max_window_tokens", "batch_tokens"):
            value = getattr(self, name)
            if value is not None and value < 8:
                raise OptionError(f"{name.replace('_', '-')}: must be >= 8, got {value}")
        if self.sample_steps is not None and not 0 < self.sample_steps <= 1:
            raise OptionError(f"sample-steps: must be in (0, 1], got {self.sample_steps}")
        if self.head_chunk < 1:
            raise OptionError("head-chunk: must be >= 1")
        if self.max_chars < 1:
            raise OptionError("max-chars: must be >= 1")

    @property
    def step_column(self) -> str | None:
        return self.segmenter[7:] if self.segmenter.startswith("column:") else None
