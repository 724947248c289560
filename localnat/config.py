"""One typed configuration for scoring, validated when built."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

SEGMENTERS = ("sentence", "line", "paragraph")
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True)
class Window:
    """A window setting: a fixed number of preceding steps `k`, or a fraction `w` of them."""

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
        if isinstance(value, bool):
            raise ValueError(f"not a window setting: {value!r}")
        if isinstance(value, int):
            return cls(k=value)
        if isinstance(value, float):
            return cls(k=int(value)) if value > 1 and value.is_integer() else cls(w=value)
        text = str(value).strip().lower()
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


@dataclass(frozen=True)
class ScoreConfig:
    """Everything the scorer needs. Defaults follow DESIGN.md section 1.

    Attributes:
        student: local directory or hub id of a causal LM; None = the offline default student.
        windows: window settings; the first one is reported as `local_nat`.
        segmenter: `sentence`, `line`, `paragraph` or `column:NAME`.
        device: `cpu`, `cuda`, `cuda:N` or `auto`.
        dtype: `float32`, `bfloat16`, `float16` or `auto` (bf16 on CUDA, fp32 on CPU).
        max_tokens: cap on prompt + response for the global pass (default: model context).
        max_window_tokens: cap on one window, prompt included (default: min(4096, max_tokens)).
        batch_tokens: padded response tokens per forward pass (default: 2048 CPU, 32768 CUDA).
        head_chunk: scored positions per LM-head chunk (bounds the [n, vocab] logits).
        max_chars: longer prompts or responses are rejected rather than scored.
        system_prompt: optional system message for the chat template.
        trust_remote_code: only when the user asks for it.
        revision: model revision (hub ids only).
    """

    student: str | None = None
    windows: tuple[Window, ...] = (Window(k=4),)
    segmenter: str = "sentence"
    device: str = "auto"
    dtype: str = "auto"
    max_tokens: int | None = None
    max_window_tokens: int | None = None
    batch_tokens: int | None = None
    head_chunk: int = 2048
    max_chars: int = 1_000_000
    system_prompt: str | None = None
    trust_remote_code: bool = False
    revision: str | None = None
    attn_implementation: str | None = None

    def __post_init__(self):
        windows = self.windows
        if isinstance(windows, (int, float, str, Window)):
            windows = (windows,)
        windows = tuple(Window.parse(w) for w in windows)
        if not windows:
            raise ValueError("at least one window setting is required")
        names = [w.name for w in windows]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate window settings: {names}")
        object.__setattr__(self, "windows", windows)
        seg = self.segmenter
        if seg not in SEGMENTERS and not (seg.startswith("column:") and len(seg) > 7):
            raise ValueError(
                f"unknown segmenter {seg!r}: use one of {', '.join(SEGMENTERS)} or column:NAME"
            )
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(
                f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}"
            )
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        for name in ("max_tokens", "max_window_tokens", "batch_tokens"):
            value = getattr(self, name)
            if value is not None and value < 8:
                raise ValueError(f"{name} must be >= 8, got {value}")
        if self.head_chunk < 1:
            raise ValueError("head_chunk must be >= 1")

    @property
    def step_column(self) -> str | None:
        return self.segmenter[7:] if self.segmenter.startswith("column:") else None


@dataclass(frozen=True)
class CurateConfig:
    """The curation job: where data comes from and goes, columns, selection, Ray sizing."""

    inputs: tuple[str, ...] = ()
    input_format: str = "auto"
    output: str = "./localnat-out"
    run_id: str | None = None
    overwrite: bool = False
    dry_run: bool = False
    prompt_column: str = "prompt"
    response_column: str = "response"
    teacher_column: str = "teacher"
    prompt_id_column: str = "prompt_id"
    correct_column: str | None = None
    select_by: str = "local"
    seed: int = 0
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 0.5
    batch_rows: int = 64
    ray_address: str | None = None
    score: ScoreConfig = ScoreConfig()

    def __post_init__(self):
        if self.select_by not in ("local", "global", "random"):
            raise ValueError(f"select_by must be local, global or random, got {self.select_by!r}")
        if self.input_format not in ("auto", "parquet", "jsonl"):
            raise ValueError(f"input_format must be auto, parquet or jsonl: {self.input_format!r}")
        if self.actors < 1 or self.batch_rows < 1:
            raise ValueError("actors and batch_rows must be >= 1")
        if self.gpus_per_actor < 0 or self.cpus_per_actor <= 0:
            raise ValueError("gpus_per_actor must be >= 0 and cpus_per_actor > 0")
        if self.run_id is not None and not _SAFE_ID.fullmatch(self.run_id):
            raise ValueError(
                f"run_id may hold letters, digits, '.', '_', '-' only: {self.run_id!r}"
            )
        if self.score.step_column and self.score.step_column in self.columns.values():
            raise ValueError("the step column must differ from the other input columns")

    @property
    def columns(self) -> dict[str, str]:
        """Role -> input column name (the correctness column only when configured)."""
        cols = {
            "prompt": self.prompt_column,
            "response": self.response_column,
            "teacher": self.teacher_column,
            "prompt_id": self.prompt_id_column,
        }
        if self.correct_column:
            cols["is_correct"] = self.correct_column
        return cols
