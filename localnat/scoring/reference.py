"""The definition, executable: the naive reference every fast path is held to (docs/method.md
§9). One plain forward per window, unbatched, full logits, written from §1-§5 as plainly as
possible. Segmentation and the token-to-step rule come from `steps` (tested on their own).
Used by the exactness tests and as the benchmark's naive baseline.
"""

from __future__ import annotations

import math

import torch

from localnat.scoring.steps import assign_tokens, segment
from localnat.scoring.student import encode_prompt


def token_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t >= 1, from one forward with full logits."""
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=device)).logits[0].float()  # [L, V]
    logp = torch.log_softmax(logits, dim=-1)
    return logp[:-1].gather(1, torch.tensor(ids[1:], device=device)[:, None])[:, 0].cpu()


def encoded(model, tok, prompt, response, *, segmenter, steps, max_tokens):
    """(prompt ids, response ids, step bounds, the global pass's log-probs) of one pair: §1,
    §2 and the global pass of §5, cut at `max_tokens` (§6)."""
    prompt_ids = encode_prompt(tok, prompt)
    enc = tok(response, add_special_tokens=False, return_offsets_mapping=True)
    resp = enc["input_ids"]
    bounds, _ = assign_tokens(response, enc["offset_mapping"], segment(response, segmenter, steps))
    n_keep = min(len(resp), max_tokens - len(prompt_ids))
    glob = token_logprobs(model, prompt_ids + resp[:n_keep])[len(prompt_ids) - 1 :]
    return prompt_ids, resp, bounds, glob


def reference_scores(
    model, tok, prompt, response, windows, *, segmenter="sentence", steps=None, max_tokens=10_000
):
    """Return (GN, {window: LN}, {window: [l_i]}) for one pair; windows as (kind, value)."""
    prompt_ids, resp, bounds, glob = encoded(
        model, tok, prompt, response, segmenter=segmenter, steps=steps, max_tokens=max_tokens
    )
    P = len(prompt_ids)
    gn = glob.mean().item()
    ln, per_step = {}, {}
    n_steps = len(bounds) - 1
    for kind, value in windows:
        scores = []
        for i in range(1, n_steps + 1):
            k_i = value if kind == "k" else max(1, math.ceil(value * (i - 1)))
            first = max(1, i - k_i)
            a, b, c = bounds[first - 1], bounds[i - 1], bounds[i]
            window = prompt_ids + resp[a:c]
            lp = token_logprobs(model, window)[P - 1 :]  # log-probs of resp[a:c]
            scores.append(lp[b - a :].mean().item())
        per_step[(kind, value)] = scores
        ln[(kind, value)] = sum(scores) / len(scores)
    return gn, ln, per_step


def reference_nofirst(
    model, tok, prompt, response, window, *, segmenter="sentence", steps=None, max_tokens=10_000
):
    """(LN, GN) with each step's first token left out (§5.3, ASLEC-DROP): a step scores the
    mean of its tokens after its first, in its window (plain, untruncated windows: the
    tests' responses are short); a one-token step is left out of LN; GN is the mean over
    the global pass's tokens but each step's first. None where no token is left."""
    prompt_ids, resp, bounds, glob = encoded(
        model, tok, prompt, response, segmenter=segmenter, steps=steps, max_tokens=max_tokens
    )
    P = len(prompt_ids)
    firsts = set(bounds[:-1])
    rest = [glob[t].item() for t in range(len(glob)) if t not in firsts]
    kind, value = window
    scores = []
    for i in range(1, len(bounds)):
        k_i = value if kind == "k" else max(1, math.ceil(value * (i - 1)))
        a, b, c = bounds[max(1, i - k_i) - 1], bounds[i - 1], bounds[i]
        if c - b > 1:
            lp = token_logprobs(model, prompt_ids + resp[a:c])[P - 1 :]
            scores.append(lp[b - a + 1 :].mean().item())
    ln = sum(scores) / len(scores) if scores else None
    return ln, (sum(rest) / len(rest) if rest else None)


def reference_global_steps(model, tok, prompt, response, *, segmenter="sentence", steps=None):
    """Per step, the mean log-prob of its tokens in one pass over prompt + whole response."""
    prompt_ids = encode_prompt(tok, prompt)
    enc = tok(response, add_special_tokens=False, return_offsets_mapping=True)
    bounds, _ = assign_tokens(response, enc["offset_mapping"], segment(response, segmenter, steps))
    glob = token_logprobs(model, prompt_ids + enc["input_ids"])[len(prompt_ids) - 1 :]
    return [glob[b:c].mean().item() for b, c in zip(bounds[:-1], bounds[1:])]


def reference_signals(model, tok, prompt, response, *, max_tokens=10_000, rank_clip=100):
    """(RSR, mean next-token entropy, sum of ranks, sum of surprisals) over the global pass's
    response tokens, from full logits: rank = 1 + number of vocabulary entries with a
    strictly higher logit, clipped at `rank_clip`; RSR = sum of ranks / sum of surprisals
    (arXiv 2601.14249)."""
    prompt_ids = encode_prompt(tok, prompt)
    resp = tok(response, add_special_tokens=False)["input_ids"]
    P = len(prompt_ids)
    ids = prompt_ids + resp[: max_tokens - P]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()[P - 1 : -1]  # predict resp
    targets = torch.tensor(ids[P:])
    target_logit = logits.gather(1, targets[:, None])
    ranks = (1 + (logits > target_logit).sum(-1)).clamp(max=rank_clip).double()
    logp = torch.log_softmax(logits, dim=-1)
    surprisal = -logp.gather(1, targets[:, None])[:, 0].double()
    entropy = -(logp.exp() * logp).sum(-1).double()
    rank_sum, surprisal_sum = ranks.sum().item(), surprisal.sum().item()
    return rank_sum / surprisal_sum, entropy.mean().item(), rank_sum, surprisal_sum
