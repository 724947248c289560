"""The scorer's typed configuration, validated when built; each field is a typed option
(`localnat.fields`)."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

from ..fields import ROWS, SCORES, OptionError, check_fields, option
from .windows import Window

SEGMENTERS = ("sentence", "line", "paragraph")
# The signals a run may ask for, and what each needs the student to run: the windows (LN and
# LN without first tokens; their steps near the start are one short forward, the head),
# the whole global pass (GN, RSR, entropy, GN without first tokens; RSR and entropy its ranks
# and entropies too), or nothing (length: the token count).
SIGNAL_NEEDS = {
    "local": "windows",
    "local_nofirst": "windows",
    "global": "global",
    "global_nofirst": "global",
    "rsr": "ranks",
    "entropy": "ranks",
    "length": None,
}
# Attention kernels by their transformers names (`attn_implementation`), and the module a
# kernel needs besides torch: checked when the config is built, not in an actor a minute later.
ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
KERNEL_MODULES = {
    "flash_attention_2": ("flash_attn", "flash-attn"),
    "flash_attention_3": ("flash_attn_interface", "flash-attn 3 (hopper/ of flash-attention)"),
}
CUDA_ONLY = ("flash_attention_2", "flash_attention_3")
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


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
        "windows are not a prefix of the response (at least 4); `local_nat` becomes an "
        "unbiased estimate with `local_nat_se`, the global pass's step means its control when "
        "a global signal is computed (docs/method.md §5.2)",
        group=_S,
        affects=SCORES,
        default_text="off: every step, exact",
        metavar="F",
    )
    max_chars: int = option(
        1_000_000, "longer prompts or responses are rejected, not scored", group=_S, affects=ROWS
    )
    signals: tuple[str, ...] = option(
        tuple(SIGNAL_NEEDS),
        "the signals to compute, comma-separated or repeated: `local`, `local_nofirst`, "
        "`global`, `global_nofirst`, `rsr`, `entropy`, `length`. The student runs only what "
        "they need: `local` alone runs no global pass (its LN is bit-identical to an every-signal "
        "run's); `global` alone runs no window. The others are null",
        group=_S,
        affects=SCORES,
        default_text="all",
        metavar="SIGNALS",
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
        _check_kernel(self.attn_implementation, self.device)
        asked = tuple(dict.fromkeys(p.strip() for v in self.signals for p in v.split(",")))
        unknown = [name for name in asked if name not in SIGNAL_NEEDS]
        if unknown or not asked:
            raise OptionError(
                f"signals: unknown {unknown or 'none given'}; use some of {', '.join(SIGNAL_NEEDS)}"
            )
        object.__setattr__(self, "signals", asked)

    def needs(self, what: str) -> bool:
        """Whether the signals asked for need the `windows`, the whole `global` pass, or
        its `ranks` (and entropies)."""
        needed = {SIGNAL_NEEDS[name] for name in self.signals}
        return what in needed or (what == "global" and "ranks" in needed)

    @property
    def step_column(self) -> str | None:
        return self.segmenter[7:] if self.segmenter.startswith("column:") else None


def _check_kernel(kernel: str, device: str) -> None:
    """A kernel that cannot run here fails now, in one line: its package missing, or a
    CUDA-only kernel on the CPU."""
    if kernel in CUDA_ONLY and device == "cpu":
        raise OptionError(
            f"attn-implementation: {kernel} runs on CUDA only, and the device is cpu; "
            "use sdpa, or give the actors GPUs (--gpus-per-actor)"
        )
    if kernel in KERNEL_MODULES:
        module, package = KERNEL_MODULES[kernel]
        if importlib.util.find_spec(module) is None:
            raise OptionError(
                f"attn-implementation: {kernel} needs the {package} package, which this "
                f"Python lacks (no module {module!r}); install it where the job runs, or "
                "use sdpa"
            )
