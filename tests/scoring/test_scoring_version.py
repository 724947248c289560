"""What a number means is versioned: `SCORING_VERSION` is in the score cache's namespace and a
run's identity, so it must move whenever the reference's outputs move. This test pins the
reference (segmentation, token-to-step bounds, every signal) on fixed pairs, a fixed student
(weights from a seeded numpy generator, the bundled SmolLM2 tokenizer) and fixed settings,
in golden.json under the version that produced them; and step sampling's estimates (the
draw, the estimator, the global pass as its control) on one long response. It is a
tripwire, not a check of correctness (test_exact.py holds every fast path to the
reference):

- the reference's outputs moved, the version did not: fail (bump SCORING_VERSION in
  localnat/scoring/schema.py, then regenerate);
- the version moved: regenerate with `LOCALNAT_GOLDEN=write pytest tests/scoring/
  test_scoring_version.py` (it refuses to overwrite the golden of the same version).
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from localnat.scoring.reference import (
    encoded,
    reference_nofirst,
    reference_scores,
    reference_signals,
)
from localnat.scoring.schema import SCORING_VERSION
from localnat.scoring.steps import segment
from localnat.testing import PROMPTS, RESPONSES, sample_tokenizer
from localnat.testing.students import STUDENT_SHAPES

GOLDEN = Path(__file__).with_name("golden.json")
TOL = 1e-4
WINDOWS = [("k", 4), ("k", 1), ("w", 0.25)]
COLUMN_STEPS = [0, 28, 56]  # offsets into RESPONSES[0] for the column segmenter


def student(vocab_size: int) -> LlamaForCausalLM:
    """A tiny Llama whose weights come from numpy's seeded generator (not torch's init,
    which a library version may change)."""
    shape = {**STUDENT_SHAPES["tiny"], "vocab_size": vocab_size, "tie_word_embeddings": False}
    config = LlamaConfig(**shape, attn_implementation="eager")
    model = LlamaForCausalLM(config).eval()
    rng = np.random.default_rng(2510_03988)
    with torch.no_grad():
        for _, param in sorted(model.state_dict().items()):
            shape = tuple(param.shape)
            if len(shape) == 1:  # norms
                values = 1.0 + 0.1 * rng.standard_normal(shape)
            else:
                values = rng.standard_normal(shape) * (2.0 / np.sqrt(shape[-1]))
            param.copy_(torch.from_numpy(values.astype(np.float32)))
    return model


def outputs() -> list[dict]:
    """The reference on every case: what the numbers of this version are."""
    tok = sample_tokenizer()
    model = student(len(tok))
    cases = [
        (p, r, seg, None)
        for seg in ("sentence", "line", "paragraph")
        for p, r in zip(PROMPTS, RESPONSES)
    ]
    cases.append((PROMPTS[0], RESPONSES[0], "column:steps", COLUMN_STEPS))
    out = []
    for prompt, response, segmenter, given in cases:
        _, ids, bounds, _ = encoded(
            model, tok, prompt, response, segmenter=segmenter, steps=given, max_tokens=10_000
        )
        gn, ln, per_step = reference_scores(
            model, tok, prompt, response, WINDOWS, segmenter=segmenter, steps=given
        )
        rsr, entropy, rank_sum, surprisal_sum = reference_signals(model, tok, prompt, response)
        ln_nofirst, gn_nofirst = reference_nofirst(
            model, tok, prompt, response, WINDOWS[0], segmenter=segmenter, steps=given
        )
        out.append(
            {
                "segmenter": segmenter,
                "spans": [list(s) for s in segment(response, segmenter, given)],
                "n_tokens": len(ids),
                "bounds": [int(b) for b in bounds],
                "global_nat": gn,
                "local_nat": {f"{k}{v}": ln[(k, v)] for k, v in WINDOWS},
                "step_logprobs": {f"{k}{v}": per_step[(k, v)] for k, v in WINDOWS},
                "rsr": rsr,
                "global_entropy": entropy,
                "rank_sum": rank_sum,
                "surprisal_sum": surprisal_sum,
                "local_nofirst": ln_nofirst,
                "global_nofirst": gn_nofirst,
            }
        )
    return out + sampled(model, tok)


# A response of 40 sentence steps: long enough that a sample leaves steps out.
WORDS = "we add the two numbers then check the sum and the product twice".split()
LONG = " ".join(
    " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + i % 5)).capitalize() + "."
    for i in range(40)
)


def sampled(model, tok) -> list[dict]:
    """Step sampling's estimates (docs/method.md §5.2) on LONG: with every signal (the global
    pass as control) and with LN alone (the plain estimate), a fixed draw (seeded by the
    tokens): what the estimator, the draw and the control make of the same steps."""
    from localnat import ScoreConfig, Scorer

    out = []
    for signals in (None, ("local",)):
        cfg = ScoreConfig(
            student="golden",
            windows=(4, 0.25),
            sample_steps=0.2,
            device="cpu",
            **({"signals": signals} if signals else {}),
        )
        row = Scorer(cfg, model=model, tokenizer=tok).score([PROMPTS[0]], [LONG]).to_pylist()[0]
        out.append(
            {
                "sampled": "local" if signals else "every signal",
                **{k: row[k] for k in ("local_nat", "local_nat_se", "local_nat_df")},
                **{k: row[k] for k in ("local_nat_k4", "local_nat_w25", "steps_scored")},
                "scored_steps": [i for i, x in enumerate(row["step_logprobs"]) if x is not None],
            }
        )
    return out


def differences(golden, now, where="") -> list[str]:
    """Where two outputs differ: ints, strings and shapes exactly, floats beyond TOL."""
    if isinstance(golden, dict) and isinstance(now, dict):
        if golden.keys() != now.keys():
            return [f"{where}: keys {sorted(golden)} -> {sorted(now)}"]
        return [d for k in golden for d in differences(golden[k], now[k], f"{where}.{k}")]
    if isinstance(golden, list) and isinstance(now, list):
        if len(golden) != len(now):
            return [f"{where}: {len(golden)} items -> {len(now)}"]
        return [
            d
            for i, (a, b) in enumerate(zip(golden, now))
            for d in differences(a, b, f"{where}[{i}]")
        ]
    if isinstance(golden, float) or isinstance(now, float):
        ok = golden is not None and now is not None and abs(golden - now) <= TOL
        return [] if ok else [f"{where}: {golden} -> {now}"]
    return [] if golden == now else [f"{where}: {golden!r} -> {now!r}"]


def test_the_reference_moves_only_with_the_scoring_version():
    now = outputs()
    if os.environ.get("LOCALNAT_GOLDEN") == "write":
        old = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {"scoring_version": 0}
        if old["scoring_version"] == SCORING_VERSION and differences(old["cases"], now):
            pytest.fail(f"the golden of version {SCORING_VERSION} differs: bump the version first")
        GOLDEN.write_text(json.dumps({"scoring_version": SCORING_VERSION, "cases": now}, indent=1))
    golden = json.loads(GOLDEN.read_text())
    assert golden["scoring_version"] == SCORING_VERSION, (
        f"SCORING_VERSION is {SCORING_VERSION}, the golden's {golden['scoring_version']}: "
        "regenerate it (LOCALNAT_GOLDEN=write, see this module's doc)"
    )
    moved = differences(golden["cases"], now)
    assert not moved, (
        "the reference's outputs changed without a new SCORING_VERSION (a cache would serve "
        "old numbers as new ones): bump it in localnat/scoring/schema.py and regenerate the "
        f"golden. First differences: {moved[:5]}"
    )


def test_the_tripwire_trips():
    """A changed number is seen: the comparison is not vacuous."""
    now = outputs()[:2]
    moved = json.loads(json.dumps(now))
    moved[1]["local_nat"]["k4"] += 2 * TOL
    moved[0]["bounds"][1] += 1
    assert len(differences(now, moved)) == 2 and not differences(now, now)
