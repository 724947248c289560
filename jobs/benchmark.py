"""Benchmark: localnat against a naive per-window loop and a padded batched baseline.

Same responses, same tokenization and steps, one run, side by side:
  naive   - one forward per window (and one global pass), full logits, unbatched
  padded  - every window its own row (prompt repeated), length-sorted, padded batches by
            tokens, logits only at scored positions
  localnat- the Scorer: windows packed behind one shared prompt, segments sharing a context
            start computed once, logits only at scored positions

    python -m jobs.benchmark                          # real student, bundled long-CoT traces
    python -m jobs.benchmark --student-shape tiny     # tiny random model, seconds
    python -m jobs.benchmark --device cuda --dtype bfloat16 --student-shape qwen2.5-1.5b
    python -m jobs.benchmark --sampling 0.5 0.2   # step sampling against exact scores

The third is the GPU check: a random-weight student of Qwen2.5-1.5B's shape (weights do not
change speed), the bundled SmolLM2 tokenizer and traces; it needs only torch, transformers,
numpy and pyarrow (no Ray, no network) and takes a few minutes on one H100.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pyarrow.parquet as pq
import torch

from localnat import ScoreConfig, Scorer
from localnat.scoring.student import load_model, load_tokenizer, resolve_device, resolve_dtype
from localnat.testing import SAMPLE_DIR, STUDENT_SHAPES, sample_tokenizer, shaped_student

SAMPLE = SAMPLE_DIR / "mip_math_sample.parquet"
# Methods must agree within this (fp32: the exactness contract; half precision: test_gpu's).
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 5e-2}


def load_pairs(path: str, n: int, max_chars: int) -> tuple[list[str], list[str]]:
    """The first n long-CoT rows (all rows without a long_cot column), responses cut."""
    rows = pq.read_table(path).to_pylist()
    rows = [r for r in rows if r.get("long_cot", True)][:n]
    return [r["prompt"] for r in rows], [r["response"][:max_chars] for r in rows]


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


def run_naive(model, items, k, device):
    """The package's naive reference (one plain forward per window, full logits)."""
    from localnat.scoring.reference import token_logprobs

    wins = windows_of(items, k)
    lps = [token_logprobs(model, ids)[start - 1 :].double().numpy() for _, _, ids, start in wins]
    tokens = sum(len(ids) for _, _, ids, _ in wins)
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
    """This machine's measured matmul FLOP/s in `dtype`: the MFU denominator. A GPU needs
    large operands to reach its peak; 2048 is near a CPU's."""
    n = 8192 if device.type == "cuda" else 2048
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


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--student", help="model directory; default: the offline SmolLM2-135M-Instruct")
    ap.add_argument(
        "--student-shape",
        choices=list(STUDENT_SHAPES),
        help="a random-weight Qwen2 student of this shape with the bundled SmolLM2 tokenizer "
        "(no model files needed) instead of --student",
    )
    ap.add_argument("--data", default=str(SAMPLE), help="Parquet with prompt, response[, long_cot]")
    ap.add_argument("--responses", type=int, help="default: 6 on CPU, every long-CoT row on CUDA")
    ap.add_argument(
        "--max-chars", type=int, help="cut responses; default: 3000 on CPU, none on CUDA"
    )
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-tokens", type=int, default=None)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument(
        "--attn-implementation", default="sdpa", help="sdpa (default) or flash_attention_2"
    )
    ap.add_argument(
        "--sampling",
        type=float,
        nargs="+",
        metavar="F",
        help="instead: step sampling at these fractions against exact scoring (jobs/sampling.py)",
    )
    ap.add_argument(
        "--race-epsilon",
        type=float,
        nargs="+",
        default=[0.02],
        help="with --sampling: racing tolerances (nats per token), a racing row each",
    )
    ap.add_argument("--race-delta", type=float, default=0.01, help="with --sampling")
    ap.add_argument(
        "--no-local-exact",
        action="store_true",
        help="with --sampling: leave out the exact --signals local run (its share of the tokens)",
    )
    return ap.parse_args(argv)


def build_student(args, cfg: ScoreConfig):
    """(tokenizer, model on its device in its dtype, label)."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    if args.student_shape:
        tok = sample_tokenizer()
        model = shaped_student(args.student_shape, len(tok), device, dtype)
        label = f"random {args.student_shape}-shape Qwen2, SmolLM2 tokenizer"
    else:
        tok, model = load_tokenizer(cfg), load_model(cfg)
        label = cfg.student or "SmolLM2-135M-Instruct"
    return tok, model.to(device=device, dtype=dtype).eval(), label


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    cuda = args.device.startswith("cuda")
    n_responses = args.responses or (10**6 if cuda else 6)
    max_chars = args.max_chars or (10**9 if cuda else 3000)
    prompts, responses = load_pairs(args.data, n_responses, max_chars)
    cfg = ScoreConfig(
        student=args.student,
        windows=(args.k,),
        device=args.device,
        dtype=args.dtype,
        batch_tokens=args.batch_tokens,
        attn_implementation=args.attn_implementation,
    )
    tok, model, label = build_student(args, cfg)
    if args.sampling:
        from jobs import sampling

        print(f"student: {label}, k={args.k}, {next(model.parameters()).dtype}")
        sampling.run(
            cfg,
            model,
            tok,
            sampling.load_rows(args.data, n_responses, max_chars),
            args.sampling,
            args.race_epsilon,
            args.race_delta,
            local_exact=not args.no_local_exact,
        )
        return 0
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
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

    print(
        f"\nstudent: {label} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), "
        f"device {device}, {dtype}, k={args.k}, {len(items)} responses, {n_resp_tokens} "
        f"response tokens, {n_steps} steps, batch_tokens={batch_tokens}"
    )
    print(
        f"ideal token ratio (padded tokens / prompt once per pack, no padding): "
        f"{results['padded'][1] / ideal:.2f}"
    )
    max_diff = report(results, model, n_resp_tokens, matmul_flops(device, dtype), dtype, ideal)
    tol = TOLERANCE[dtype]
    verdict = "ok" if max_diff <= tol else "FAIL"
    print(f"max score difference between methods: {max_diff:.2e} (tolerance {tol:g}: {verdict})")
    return 0 if verdict == "ok" and math.isfinite(max_diff) else 1


def report(results: dict, model, n_resp_tokens: int, peak: float, dtype, ideal: int) -> float:
    """Print the table (response tokens/s, speedups, model tokens, achieved FLOP/s and MFU
    against the measured matmul rate, differences from the reference method); return the
    largest difference."""
    non_embed = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    hidden, vocab = model.get_output_embeddings().weight.shape[1], model.config.vocab_size
    ref_name = "naive" if "naive" in results else "padded"  # the speed and score reference
    ref = results[ref_name]
    print(
        f"{'method':<10}{'resp tok/s':>12}{'vs ' + ref_name:>10}{'vs padded':>10}"
        f"{'model tokens':>14}{'GFLOP/s':>10}{'MFU':>8}{'max|dLN|':>10}{'max|dGN|':>10}"
    )
    max_diff = 0.0
    for name, ((gn_m, ln_m), tokens, secs) in results.items():
        # linear layers over every token pushed + LM head over scored tokens (attention excluded)
        scored = tokens if name == "naive" else 2 * n_resp_tokens  # step window + global
        flops = 2 * non_embed * tokens + 2 * hidden * vocab * min(scored, tokens)
        d_ln = float(np.max(np.abs(ln_m - ref[0][1])))
        d_gn = float(np.max(np.abs(gn_m - ref[0][0])))
        max_diff = max(max_diff, d_ln, d_gn)
        print(
            f"{name:<10}{n_resp_tokens / secs:>12.1f}{ref[2] / secs:>9.2f}x"
            f"{results['padded'][2] / secs:>9.2f}x{tokens:>14,}{flops / secs / 1e9:>10.1f}"
            f"{100 * flops / secs / peak:>7.1f}%{d_ln:>10.2e}{d_gn:>10.2e}"
        )
    achieved = results["padded"][2] / results["localnat"][2]
    print(
        f"MFU: against this machine's measured {dtype} matmul rate, {peak / 1e9:.1f} GFLOP/s; "
        f"localnat speedup over padded {achieved:.2f}x = "
        f"{100 * achieved / (results['padded'][1] / ideal):.0f}% of the ideal token ratio"
    )
    return max_diff


if __name__ == "__main__":
    raise SystemExit(main())
