"""Benchmark: localnat against a naive per-window loop and a padded batched baseline.

Same responses, same tokenization and steps, one run, side by side:
  naive   - one forward per window (and one global pass), full logits, unbatched
  padded  - every window its own row (prompt repeated), length-sorted, padded batches by
            tokens, logits only at scored positions
  localnat- the Scorer: windows packed behind one shared prompt, segments sharing a context
            start computed once, logits only at scored positions

    python -m jobs.benchmark                  # real student, bundled long-CoT MATH traces
    python -m jobs.benchmark --quick          # tiny random model, seconds
    python -m jobs.benchmark --device cuda --dtype bfloat16 --responses 40 --max-chars 40000
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from localnat import ScoreConfig, Scorer
from localnat.scoring.student import load_model, load_tokenizer, resolve_device, resolve_dtype

SAMPLE = Path(__file__).resolve().parent.parent / "localnat" / "sample" / "mip_math_sample.parquet"


def load_pairs(path: str, n: int, max_chars: int) -> tuple[list[str], list[str]]:
    table = pq.read_table(path).to_pandas()
    if "long_cot" in table:
        table = table[table.long_cot]
    table = table.head(n)
    return table.prompt.tolist(), [r[:max_chars] for r in table.response.tolist()]


def windows_of(items, k: int):
    """Per response: [(window ids, n_prompt_plus_context, step index)] and the global pass."""
    out = []
    for r, it in enumerate(items):
        prompt, resp, b = it.prompt_ids.tolist(), it.response_ids.tolist(), it.bounds
        for i in range(1, len(b)):
            a = int(b[max(1, i - k) - 1])
            ids = prompt + resp[a : int(b[i])]
            out.append((r, i - 1, ids, len(prompt) + int(b[i - 1]) - a))
        out.append((r, -1, prompt + resp, len(prompt)))  # global pass
    return out


def collect(items, windows, lps):
    """(GN, LN) per response from per-window scored log-probs."""
    steps = [dict() for _ in items]
    gn = [0.0] * len(items)
    for (r, i, _, _), lp in zip(windows, lps):
        if i < 0:
            gn[r] = float(np.mean(lp))
        else:
            steps[r][i] = float(np.mean(lp))
    return np.array(gn), np.array([np.mean(list(s.values())) for s in steps])


@torch.inference_mode()
def run_naive(model, items, k, device):
    wins = windows_of(items, k)
    lps, tokens = [], 0
    for _, _, ids, start in wins:
        logits = model(torch.tensor([ids], device=device)).logits[0].float()  # [L, V]
        logp = torch.log_softmax(logits[start - 1 : -1], dim=-1)
        lps.append(
            logp.gather(1, torch.tensor(ids[start:], device=device)[:, None])[:, 0]
            .double()
            .cpu()
            .numpy()
        )
        tokens += len(ids)
    return collect(items, wins, lps), tokens, sum(len(w[2]) - w[3] for w in wins)


@torch.inference_mode()
def run_padded(model, items, k, device, batch_tokens, head_chunk):
    wins = windows_of(items, k)
    order = sorted(range(len(wins)), key=lambda j: len(wins[j][2]), reverse=True)
    lps, tokens, base = [None] * len(wins), 0, getattr(model, model.base_model_prefix)
    head = model.get_output_embeddings()
    j = 0
    while j < len(order):
        width = len(wins[order[j]][2])
        batch = order[j : j + max(1, batch_tokens // width)]
        j += len(batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, w in enumerate(batch):
            seq = wins[w][2]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        tokens += ids.numel()
        hidden = base(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        for row, w in enumerate(batch):
            _, _, seq, start = wins[w]
            h = hidden[row, start - 1 : len(seq) - 1]  # states that predict the scored tokens
            target = torch.tensor(seq[start:], device=device)
            out = []
            for s in range(0, len(target), head_chunk):
                logp = torch.log_softmax(head(h[s : s + head_chunk]).float(), dim=-1)
                out.append(logp.gather(1, target[s : s + head_chunk, None])[:, 0])
            lps[w] = torch.cat(out).double().cpu().numpy()
    ideal = sum(len(it.prompt_ids) for it in items) + sum(
        len(w[2]) - len(items[w[0]].prompt_ids) for w in wins
    )
    return collect(items, wins, lps), tokens, ideal


def matmul_flops(device, dtype) -> float:
    n = 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0:
        a @ b
        reps += 1
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny random model (seconds)")
    ap.add_argument("--student", help="default: the offline SmolLM2-135M-Instruct")
    ap.add_argument("--data", default=str(SAMPLE), help="Parquet with prompt, response[, long_cot]")
    ap.add_argument("--responses", type=int, default=6)
    ap.add_argument("--max-chars", type=int, default=3000, help="cut responses (CPU budget)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-tokens", type=int, default=None)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--attn-implementation", help="sdpa (default) or flash_attention_2")
    args = ap.parse_args(argv)
    torch.manual_seed(0)

    prompts, responses = load_pairs(args.data, args.responses, args.max_chars)
    cfg = ScoreConfig(
        student=args.student,
        windows=(args.k,),
        device=args.device,
        dtype=args.dtype,
        batch_tokens=args.batch_tokens,
        attn_implementation=args.attn_implementation,
    )
    if args.quick:
        from localnat.testing import tiny_model, tiny_tokenizer

        tok = tiny_tokenizer()
        model = tiny_model("llama", len(tok), max_positions=32768).to(cfg.device)
    else:
        tok, model = load_tokenizer(cfg), load_model(cfg)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    model = model.to(device=device, dtype=dtype).eval()
    scorer = Scorer(cfg, model=model, tokenizer=tok)
    items = [scorer.prepare(p, r) for p, r in zip(prompts, responses)]
    bad = [it.error for it in items if it.error]
    if bad:
        raise SystemExit(f"bad benchmark rows: {bad}")
    n_resp_tokens = sum(int(it.bounds[-1]) for it in items)
    n_steps = sum(len(it.spans) for it in items)
    batch_tokens = scorer.cfg.batch_tokens
    head_chunk = scorer.cfg.head_chunk

    # warm-up on one response so no method pays first-call costs
    run_padded(model, items[:1], args.k, device, batch_tokens, head_chunk)
    scorer.score_prepared(items[:1])
    scorer.stats.update(padded_tokens=0, tokens=0)

    results = {}
    if not args.skip_naive:
        (scores, tokens, _), secs = timed(lambda: run_naive(model, items, args.k, device), device)
        results["naive"] = (scores, tokens, secs)
    (scores, tokens, ideal), secs = timed(
        lambda: run_padded(model, items, args.k, device, batch_tokens, head_chunk), device
    )
    results["padded"] = (scores, tokens, secs)
    rows, secs = timed(lambda: scorer.score_prepared(items), device)
    ln = np.array([r["local_nat"] for r in rows])
    gn = np.array([r["global_nat"] for r in rows])
    results["localnat"] = ((gn, ln), scorer.stats["padded_tokens"], secs)

    peak = matmul_flops(device, dtype)
    non_embed = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    hidden, vocab = model.get_output_embeddings().weight.shape[1], model.config.vocab_size
    label = "tiny random Llama" if args.quick else (cfg.student or "SmolLM2-135M-Instruct")
    print(
        f"\nstudent: {label}"
        f" ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), device "
        f"{device}, {dtype}, k={args.k}, {len(items)} responses, {n_resp_tokens} response "
        f"tokens, {n_steps} steps, batch_tokens={batch_tokens}"
    )
    print(
        f"ideal token ratio (padded tokens / prompt once per pack, no padding): "
        f"{results['padded'][1] / ideal:.2f}"
    )
    header = (
        f"{'method':<10}{'resp tok/s':>12}{'speedup':>9}{'vs padded':>10}"
        f"{'model tokens':>14}{'GFLOP/s':>10}{'% matmul':>9}{'max|dLN|':>10}{'max|dGN|':>10}"
    )
    print(header)
    ref = results["naive" if "naive" in results else "padded"]
    max_diff = 0.0
    for name, ((gn_m, ln_m), tokens, secs) in results.items():
        # linear layers over every token pushed + LM head over scored tokens (attention excluded)
        scored = tokens if name == "naive" else 2 * n_resp_tokens  # step window + global
        flops = 2 * non_embed * tokens + 2 * hidden * vocab * min(scored, tokens)
        d_ln = float(np.max(np.abs(ln_m - ref[0][1])))
        d_gn = float(np.max(np.abs(gn_m - ref[0][0])))
        max_diff = max(max_diff, d_ln, d_gn)
        print(
            f"{name:<10}{n_resp_tokens / secs:>12.1f}{ref[2] / secs:>8.2f}x"
            f"{results['padded'][2] / secs:>9.2f}x{tokens:>14,}{flops / secs / 1e9:>10.1f}"
            f"{100 * flops / secs / peak:>8.1f}%{d_ln:>10.2e}{d_gn:>10.2e}"
        )
    achieved = results["padded"][2] / results["localnat"][2]
    print(
        f"matmul peak here: {peak / 1e9:.1f} GFLOP/s ({dtype}); localnat speedup over padded "
        f"{achieved:.2f}x = {100 * achieved / (results['padded'][1] / ideal):.0f}% of the ideal "
        f"token ratio"
    )
    if dtype == torch.float32 and max_diff > 1e-4:
        print(f"FAIL: methods disagree by {max_diff:.2e} > 1e-4", file=sys.stderr)
        return 1
    return 0 if math.isfinite(max_diff) else 1


if __name__ == "__main__":
    raise SystemExit(main())
