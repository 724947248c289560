"""Validate, tokenize and segment one (prompt, response) pair. CPU only, never raises on
bad data: a bad row comes back with `error` set and is reported, not dropped."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import ScoreConfig
from .steps import assign_tokens, segment
from .student import encode_prompt


@dataclass
class Prepared:
    """A tokenized pair. Step i holds response tokens bounds[i]:bounds[i+1] and characters
    spans[i][0]:spans[i][1]."""

    prompt_ids: np.ndarray | None = None
    response_ids: np.ndarray | None = None
    bounds: np.ndarray | None = None
    spans: list[tuple[int, int]] | None = None
    error: str | None = None


def check_text(value, name: str, max_chars: int) -> tuple[str | None, str | None]:
    """Return (text, None) for a usable string, else (None, reason)."""
    if value is None:
        return None, f"{name} is missing (null)"
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as err:
            return None, f"{name} is not valid UTF-8 ({err.reason} at byte {err.start})"
    if not isinstance(value, str):
        return None, f"{name} is a {type(value).__name__}, not a string"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None, f"{name} is not valid UTF-8 (unpaired surrogate)"
    if not value.strip():
        return None, f"{name} is empty"
    if len(value) > max_chars:
        return None, f"{name} has {len(value):,} characters, over max_chars={max_chars:,}"
    return value, None


class Preparer:
    """Holds the tokenizer; turns pairs into `Prepared` items."""

    def __init__(self, tokenizer, cfg: ScoreConfig):
        self.tokenizer = tokenizer
        self.cfg = cfg
        self._prompts: dict[str, np.ndarray] = {}

    def __call__(self, prompt, response, steps=None) -> Prepared:
        prompt, err = check_text(prompt, "prompt", self.cfg.max_chars)
        if err:
            return Prepared(error=err)
        response, err = check_text(response, "response", self.cfg.max_chars)
        if err:
            return Prepared(error=err)
        try:
            spans = segment(response, self.cfg.segmenter, steps)
        except ValueError as err:
            return Prepared(error=f"steps: {err}")
        try:
            enc = self.tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
            if not enc["input_ids"]:
                return Prepared(error="response has no tokens")
            bounds, spans = assign_tokens(response, enc["offset_mapping"], spans)
        except Exception as err:  # noqa: BLE001 - one odd row must not stop the others
            return Prepared(error=f"could not tokenize: {type(err).__name__}: {err}")
        return Prepared(
            self._prompt_ids(prompt), np.asarray(enc["input_ids"], dtype=np.int64), bounds, spans
        )

    def _prompt_ids(self, prompt: str) -> np.ndarray:
        # Every teacher answers the same prompts: encode each once.
        ids = self._prompts.get(prompt)
        if ids is None:
            if len(self._prompts) > 4096:
                self._prompts.clear()
            ids = np.asarray(
                encode_prompt(self.tokenizer, prompt, self.cfg.system_prompt), dtype=np.int64
            )
            self._prompts[prompt] = ids
        return ids
