"""Tiny random students for exactness tests, benchmarks of overhead and scale runs (fp32,
CPU, built in well under a second). Random weights: never for real scores."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
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


def tiny_model(arch: str, vocab_size: int, seed: int = 0, max_positions: int = 1024):
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
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


def save_tiny_student(path, arch: str = "llama", chat_template: bool = True) -> str:
    tok = tiny_tokenizer(chat_template)
    model = tiny_model(arch, len(tok))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
