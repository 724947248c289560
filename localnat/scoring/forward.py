"""The scoring math: a prompt computed once into a key/value cache, then batches of
segments that attend to it; log-probs only at scored positions.

One batch row, for a segment of n tokens after a prompt of P tokens (left-padded to Pmax):

    cache index:  0 .. Pmax-P-1 | Pmax-P .. Pmax-1 | Pmax .. Pmax+n-1 | padding
    content:      (pad, masked) | prompt (cached)  | segment tokens   | (masked)
    position id:                | 0 .. P-1         | P .. P+n-1       |

Causal attention over cache indices makes segment token j see the whole prompt and
segment tokens 0..j: exactly the window as a fresh sequence. Segment token j is predicted
by the hidden state of token j-1, and token 0 by the prompt's last hidden state.
The LM head runs only on those states, in chunks, with an fp32 log-softmax, so
[tokens, vocab] is never built for context tokens. The global pass's tokens also get their
rank and the next-token entropy (docs/method.md §5.1) from the same chunk of logits.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch

from .batching import Segment


@dataclass
class PromptState:
    keys: list[torch.Tensor]  # per layer [kv_heads, P, head_dim]
    values: list[torch.Tensor]
    last_hidden: torch.Tensor  # [H], predicts the first response token

    @property
    def length(self) -> int:
        return self.keys[0].shape[1]


def _base(model):
    return getattr(model, model.base_model_prefix)


def _cache_kwarg(model) -> str:
    # transformers renamed `past_key_values` to `cache` (5.2x); take whichever forward has.
    params = inspect.signature(_base(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.inference_mode()
def encode_prompt_state(model, prompt_ids: np.ndarray) -> PromptState:
    device = next(model.parameters()).device
    ids = torch.as_tensor(prompt_ids, device=device)[None]
    out = _base(model)(input_ids=ids, use_cache=True)
    layers = (getattr(out, "cache", None) or out.past_key_values).layers
    return PromptState(
        [layer.keys[0] for layer in layers],
        [layer.values[0] for layer in layers],
        out.last_hidden_state[0, -1],
    )


RANK_CLIP = 100  # the Rank-Surprisal Ratio's rank cap r (arXiv 2601.14249)


@dataclass
class Scored:
    """One segment's scored tokens: log-probs, and for the global pass its signals."""

    logprobs: np.ndarray  # [n] float64
    ranks: np.ndarray | None = None  # [n] 1-based rank of the target, clipped at RANK_CLIP
    entropy: np.ndarray | None = None  # [n] entropy (nats) of the next-token distribution


def _logits(head, hidden: torch.Tensor, softcap: float | None) -> torch.Tensor:
    logits = head(hidden).float()  # [chunk, V], fp32 for the softmax
    return torch.tanh(logits / softcap) * softcap if softcap else logits


def scored_logprobs(
    hidden: torch.Tensor,  # [N, H] states that predict the targets
    targets: torch.Tensor,  # [N]
    head: torch.nn.Module,
    chunk: int,
    softcap: float | None = None,
) -> torch.Tensor:
    """log p(target | prefix) for N positions, LM head applied `chunk` rows at a time."""
    out = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
    for s in range(0, len(targets), chunk):
        logp = torch.log_softmax(_logits(head, hidden[s : s + chunk], softcap), dim=-1)
        out[s : s + chunk] = logp.gather(1, targets[s : s + chunk, None])[:, 0]
    return out


@torch.inference_mode()
def scored_signals(
    hidden: torch.Tensor,  # [N, H]
    targets: torch.Tensor,  # [N]
    head: torch.nn.Module,
    chunk: int,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-prob, clipped rank and next-token entropy of N targets, per chunk of logits.

    Memory stays that of `scored_logprobs` (logits + log-probs, [chunk, V] each, plus a
    [chunk, V] bool for the rank's count), and the entropy reuses the logits' buffer once
    they are no longer needed.
    """
    n = len(targets)
    logp_out, rank_out, ent_out = (
        torch.empty(n, dtype=torch.float32, device=hidden.device) for _ in range(3)
    )
    for s in range(0, n, chunk):
        logits = _logits(head, hidden[s : s + chunk], softcap)  # [c, V]
        tgt = targets[s : s + chunk, None]  # [c, 1]
        # rank = 1 + number of tokens with a strictly higher logit (ties favour the target),
        # one compare-and-count pass. A top-k of RANK_CLIP was 12x slower at a small vocabulary
        # (the tests' and the scale run's student: it doubled their scoring time) and 1.4x
        # faster at 49k on CPU, where the LM head's matmul dominates either way; int32 counts,
        # as int64 ones (the default) doubled the count's time.
        rank = 1 + (logits > logits.gather(1, tgt)).sum(-1, dtype=torch.int32)
        rank_out[s : s + chunk] = rank.clamp(max=RANK_CLIP).float()
        logp = torch.log_softmax(logits, dim=-1)
        logp_out[s : s + chunk] = logp.gather(1, tgt)[:, 0]
        # p * log p in the logits' buffer: the head's output, a fresh tensor owned here
        p_logp = torch.exp(logp, out=logits).mul_(logp)
        ent_out[s : s + chunk] = -p_logp.sum(-1)
    return logp_out, rank_out, ent_out


@torch.inference_mode()
def forward_segments(
    model, segments: list[Segment], prompts: dict, head_chunk: int
) -> list[Scored]:
    """Score one batch of segments; `prompts[seg.group]` is its PromptState. Returns each
    segment's scored log-probs (float64), in order, with signals for `seg.signals` ones."""
    device = next(model.parameters()).device
    if len(segments) == 1:
        hidden, pred = _alone(model, segments[0], device)
    else:
        hidden, pred = _on_prompt_cache(model, segments, [prompts[s.group] for s in segments])
    targets = np.concatenate([s.tokens[s.score_from :] for s in segments])
    wants = np.repeat([s.signals for s in segments], [s.n_scored for s in segments])
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    # Local windows need log-probs only; the global pass's tokens (wants) also need rank and
    # entropy. Two gathers of the predicting states: together [N, H], as before.
    logp = np.empty(len(targets))
    ranks, entropy = np.full(len(targets), np.nan), np.full(len(targets), np.nan)
    plain, signal = np.flatnonzero(~wants), np.flatnonzero(wants)
    if len(plain):
        lp = scored_logprobs(hidden[t(pred[plain])], t(targets[plain]), head, head_chunk, softcap)
        logp[plain] = lp.double().cpu().numpy()
    if len(signal):
        out = scored_signals(hidden[t(pred[signal])], t(targets[signal]), head, head_chunk, softcap)
        logp[signal], ranks[signal], entropy[signal] = (x.double().cpu().numpy() for x in out)
    cuts = np.cumsum([s.n_scored for s in segments])[:-1]
    return [
        Scored(lp, rk, en) if seg.signals else Scored(lp)
        for seg, lp, rk, en in zip(
            segments, np.split(logp, cuts), np.split(ranks, cuts), np.split(entropy, cuts)
        )
    ]


def _alone(model, seg: Segment, device) -> tuple[torch.Tensor, np.ndarray]:
    """A segment batched alone (long global passes) runs as one plain sequence, prompt
    included: with no mask, SDPA takes its fused causal kernel."""
    ids = torch.from_numpy(np.concatenate([seg.prompt, seg.tokens])).to(device)
    hidden = _base(model)(input_ids=ids[None], use_cache=False).last_hidden_state[0]  # [P+n, H]
    return hidden, len(seg.prompt) - 1 + np.arange(seg.score_from, len(seg.tokens))


def _on_prompt_cache(model, segments: list[Segment], states: list[PromptState]):
    """Rows of segments attending to their prompts' caches (the diagram above). Returns the
    flat hidden states [B * W + B, H] and, per scored token, the index of its predictor."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    batch, width = len(segments), max(len(s.tokens) for s in segments)
    p_max = max(st.length for st in states)
    ids = np.zeros((batch, width), dtype=np.int64)
    pos = np.zeros((batch, width), dtype=np.int64)
    mask = np.zeros((batch, p_max + width), dtype=np.int64)
    pred = []
    for b, (seg, st) in enumerate(zip(segments, states)):
        n, p = len(seg.tokens), st.length
        ids[b, :n] = seg.tokens
        pos[b] = p + np.arange(width)
        mask[b, p_max - p : p_max + n] = 1
        j = np.arange(seg.score_from, n)
        # flat index into [batch * width hidden states | batch prompt states]
        pred.append(np.where(j == 0, batch * width + b, b * width + j - 1))

    cache = DynamicCache(config=model.config)
    for layer in range(len(states[0].keys)):
        cache.update(
            _left_pad([st.keys[layer] for st in states], p_max),
            _left_pad([st.values[layer] for st in states], p_max),
            layer,
        )
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    hidden = _base(model)(
        input_ids=t(ids),
        attention_mask=t(mask),
        position_ids=t(pos),
        use_cache=True,
        **{_cache_kwarg(model): cache},
    ).last_hidden_state  # [B, W, H], final norm applied
    hidden = torch.cat(
        [hidden.reshape(batch * width, -1), torch.stack([st.last_hidden for st in states])]
    )
    return hidden, np.concatenate(pred)


def _left_pad(tensors: list[torch.Tensor], length: int) -> torch.Tensor:
    """[kv_heads, P_i, head_dim] each -> [B, kv_heads, length, head_dim], zeros on the left."""
    first = tensors[0]
    out = first.new_zeros((len(tensors), first.shape[0], length, first.shape[2]))
    for b, x in enumerate(tensors):
        out[b, :, length - x.shape[1] :] = x
    return out
