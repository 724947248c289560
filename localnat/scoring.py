"""The scoring math: one forward over a batch of packed rows, log-probs at scored positions.

Only the hidden states that predict a scored token go through the LM head, in chunks, with
an fp32 log-softmax, so [tokens, vocab] is never built for context tokens.
"""

from __future__ import annotations

import numpy as np
import torch

from .packing import PAD, PROMPT, Row


def block_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask [B, 1, L, L]: query q sees key k <= q of its own segment or of the
    prompt; padding sees only itself (so no row of the softmax is empty)."""
    q = segment_ids[:, :, None]  # [B, L, 1]
    k = segment_ids[:, None, :]  # [B, 1, L]
    length = segment_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = ((q == k) | (k == PROMPT)) & (k != PAD) & causal
    allowed |= torch.eye(length, dtype=torch.bool, device=segment_ids.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def collate(rows: list[Row], device: torch.device, dtype: torch.dtype, pad_id: int = 0):
    """Pad rows to one length and build model inputs plus the flat scored positions."""
    length = max(len(r) for r in rows)
    batch = len(rows)
    ids = np.full((batch, length), pad_id, dtype=np.int64)
    pos = np.zeros((batch, length), dtype=np.int64)
    sid = np.full((batch, length), PAD, dtype=np.int64)
    flat_pred, targets = [], []
    for b, row in enumerate(rows):
        n = len(row)
        ids[b, :n], pos[b, :n], sid[b, :n] = row.input_ids, row.positions, row.segment_ids
        flat_pred.append(b * length + row.predictor)
        targets.append(row.targets)
    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    sid_t = to(sid)
    return {
        "input_ids": to(ids),
        "position_ids": to(pos),
        "attention_mask": block_mask(sid_t, dtype),
    }, to(np.concatenate(flat_pred)), to(np.concatenate(targets))


def scored_logprobs(
    hidden: torch.Tensor,  # [N, H] hidden states that predict the targets
    targets: torch.Tensor,  # [N]
    head: torch.nn.Module,
    chunk: int,
    softcap: float | None = None,
) -> torch.Tensor:
    """log p(target | prefix) for N positions, LM head applied `chunk` rows at a time."""
    out = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
    for s in range(0, len(targets), chunk):
        logits = head(hidden[s : s + chunk]).float()  # [chunk, V], fp32 for the softmax
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        logp = torch.log_softmax(logits, dim=-1)
        out[s : s + chunk] = logp.gather(1, targets[s : s + chunk, None])[:, 0]
    return out


@torch.inference_mode()
def forward_rows(model, rows: list[Row], head_chunk: int) -> list[np.ndarray]:
    """Run one batch of packed rows; return each row's scored log-probs (float64)."""
    param = next(model.parameters())
    inputs, flat_pred, targets = collate(rows, param.device, param.dtype, _pad_id(model))
    base = getattr(model, model.base_model_prefix)
    hidden = base(**inputs, use_cache=False).last_hidden_state  # [B, L, H], final norm applied
    hidden = hidden.reshape(-1, hidden.shape[-1])[flat_pred]  # [N, H]
    softcap = getattr(model.config, "final_logit_softcapping", None)
    logp = scored_logprobs(hidden, targets, model.get_output_embeddings(), head_chunk, softcap)
    logp = logp.double().cpu().numpy()
    return np.split(logp, np.cumsum([len(r.targets) for r in rows])[:-1])


def _pad_id(model) -> int:
    pad = getattr(model.config, "pad_token_id", None)
    return pad if isinstance(pad, int) and pad >= 0 else 0
