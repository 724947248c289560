"""Every fast path against the naive one-forward-per-window reference, fp32, 1e-4 per step."""

import numpy as np
import pytest
import torch

from localnat import Window
from localnat.scoring.reference import (
    reference_global_steps,
    reference_nofirst,
    reference_scores,
    reference_signals,
    token_logprobs,
)
from localnat.scoring.steps import assign_tokens, segment
from localnat.scoring.student import encode_prompt
from localnat.testing import PROMPTS, RESPONSES, WINDOWS, as_setting, scorer

TOL = 1e-4


def check_against_reference(table, model, tok, prompts, responses, windows=WINDOWS, **ref_kw):
    rows = table.to_pylist()
    for row, p, y in zip(rows, prompts, responses):
        assert row["status"] == "ok", row["error"]
        gn, ln, per_step = reference_scores(model, tok, p, y, windows, **ref_kw)
        assert abs(row["global_nat"] - gn) < TOL
        for kind, value in windows:
            name = f"local_nat_{Window.parse(as_setting(kind, value)).name}"
            assert abs(row[name] - ln[(kind, value)]) < TOL, name
        np.testing.assert_allclose(row["step_logprobs"], per_step[windows[0]], atol=TOL)
        assert abs(row["local_nat"] - ln[windows[0]]) < TOL
        assert row["local_nat_se"] == 0 and row["steps_scored"] == row["n_steps"]  # exact
        rsr, entropy, rank_sum, surprisal_sum = reference_signals(
            model, tok, p, y, max_tokens=ref_kw.get("max_tokens", 10_000)
        )
        assert abs(row["rsr"] - rsr) < TOL
        assert abs(row["global_entropy"] - entropy) < TOL
        assert row["rank_sum"] == pytest.approx(rank_sum, rel=1e-6)
        assert row["surprisal_sum"] == pytest.approx(surprisal_sum, rel=1e-5)
        if not row["window_truncated"]:  # each step's first token left out (§5.3)
            ln_nofirst, gn_nofirst = reference_nofirst(model, tok, p, y, windows[0], **ref_kw)
            for got, expect in (
                (row["local_nofirst"], ln_nofirst),
                (row["global_nofirst"], gn_nofirst),
            ):
                assert (got is None) == (expect is None)
                assert got is None or abs(got - expect) < TOL


@pytest.mark.parametrize(
    "options",
    [
        dict(),  # defaults: a few large batches mixing prompts of different lengths
        dict(batch_tokens=96),  # many batches, padding
        dict(batch_tokens=8, head_chunk=3),  # one segment per batch, tiny head chunks
    ],
)
def test_matches_reference(model, tok, options):
    table = scorer(model, tok, **options).score(PROMPTS, RESPONSES)
    check_against_reference(table, model, tok, PROMPTS, RESPONSES)
    for row, p, y in zip(table.to_pylist(), PROMPTS, RESPONSES):
        expected = reference_global_steps(model, tok, p, y)
        np.testing.assert_allclose(row["step_global_logprobs"], expected, atol=TOL)


def test_batching_does_not_change_scores(model, tok):
    s = scorer(model, tok, batch_tokens=200)
    together = s.score(PROMPTS, RESPONSES).to_pylist()
    alone = [s.score([p], [y]).to_pylist()[0] for p, y in zip(PROMPTS, RESPONSES)]
    for a, b in zip(together, alone):
        assert abs(a["local_nat"] - b["local_nat"]) < 1e-5
        assert abs(a["global_nat"] - b["global_nat"]) < 1e-5


def test_prompt_is_computed_once_per_call(model, tok, monkeypatch):
    import localnat.scoring.api as api

    encoded = []
    real = api.encode_prompt_state
    monkeypatch.setattr(api, "encode_prompt_state", lambda m, p: encoded.append(p) or real(m, p))
    table = scorer(model, tok).score(PROMPTS[:1] * 3 + PROMPTS[1:2], RESPONSES[:4])
    assert len(encoded) == 2  # two distinct prompts, dozens of windows
    check_against_reference(table, model, tok, PROMPTS[:1] * 3 + PROMPTS[1:2], RESPONSES[:4])


def test_one_step_response_has_local_equal_global(model, tok):
    row = scorer(model, tok).score(["Q?"], ["Just one step without a break"]).to_pylist()[0]
    assert row["n_steps"] == 1
    assert abs(row["local_nat"] - row["global_nat"]) < 1e-6


def test_no_chat_template_uses_prompt_and_blank_line(model, tok_plain):
    ids = encode_prompt(tok_plain, "Hi there")
    assert ids == tok_plain("Hi there\n\n")["input_ids"]
    table = scorer(model, tok_plain).score(PROMPTS, RESPONSES)
    check_against_reference(table, model, tok_plain, PROMPTS, RESPONSES)


@pytest.mark.parametrize("segmenter", ["line", "paragraph"])
def test_other_segmenters(model, tok, segmenter):
    table = scorer(model, tok, segmenter=segmenter).score(PROMPTS, RESPONSES)
    check_against_reference(table, model, tok, PROMPTS, RESPONSES, segmenter=segmenter)


def test_given_steps(model, tok):
    y = RESPONSES[0]
    steps = [[0, 28, 60], ["First, note that 2 + 3 = 5.", y[28:]]]
    table = scorer(model, tok, segmenter="column:steps").score([PROMPTS[0]] * 2, [y, y], steps)
    rows = table.to_pylist()
    assert rows[0]["step_starts"] == [0, 28, 60] and rows[1]["step_starts"] == [0, 28]
    for row, st in zip(rows, steps):
        gn, ln, _ = reference_scores(
            model, tok, PROMPTS[0], y, WINDOWS, segmenter="column:steps", steps=st
        )
        assert abs(row["local_nat"] - ln[("k", 4)]) < TOL
        assert abs(row["global_nat"] - gn) < TOL


def test_response_longer_than_max_tokens(model, tok):
    windows = [("k", 1)]  # short windows: only the global pass is cut
    table = scorer(model, tok, max_tokens=75, windows=(1,)).score(PROMPTS, RESPONSES)
    rows = table.to_pylist()
    for row in rows:
        assert row["global_truncated"] == (row["n_prompt_tokens"] + row["n_response_tokens"] > 75)
    assert any(r["global_truncated"] for r in rows)
    assert not any(r["window_truncated"] for r in rows)
    check_against_reference(table, model, tok, PROMPTS, RESPONSES, windows, max_tokens=75)


def test_step_longer_than_max_window_tokens(model, tok):
    y = "A " + "very long step with many words and no break at all " * 6 + ". Short end here."
    table = scorer(model, tok, max_window_tokens=40).score([PROMPTS[0]], [y])
    row = table.to_pylist()[0]
    assert row["status"] == "ok" and row["window_truncated"]
    assert max(row["step_tokens"]) > 40 - row["n_prompt_tokens"]
    # naive check of the chunk rule for the long step: each chunk of room//2 tokens scored with
    # as much context as fits in room response tokens
    prompt = encode_prompt(tok, PROMPTS[0])
    enc = tok(y, add_special_tokens=False, return_offsets_mapping=True)
    bounds, _ = assign_tokens(y, enc["offset_mapping"], segment(y, "sentence"))
    ids, room = enc["input_ids"], 40 - len(prompt)
    b, c = int(bounds[0]), int(bounds[1])
    lps = []
    for s in range(b, c, room // 2):
        e = min(s + room // 2, c)
        a = max(0, e - room)
        lps.extend(token_logprobs(model, prompt + ids[a:e])[len(prompt) - 1 :][s - a :].tolist())
    assert abs(row["step_logprobs"][0] - np.mean(lps)) < TOL


def test_bad_rows_get_errors_and_others_are_kept(model, tok):
    prompts = ["Q?", None, "Q?", "Q?", "Q?", "", "Q?", "x" * 50]
    responses = ["Good answer. Yes.", "ok", None, 5, b"\xff\xfe", "ok", "   \n ", "A fine answer."]
    rows = scorer(model, tok, max_chars=40).score(prompts, responses).to_pylist()
    assert [r["status"] for r in rows] == ["ok"] + ["error"] * 7
    errors = [r["error"] for r in rows[1:]]
    for err, expected in zip(
        errors,
        [
            "prompt is missing",
            "response is missing",
            "not a string",
            "not valid UTF-8",
            "prompt is empty",
            "response is empty",
            "over max_chars",
        ],
    ):
        assert expected in err
    assert rows[0]["local_nat"] is not None and rows[1]["local_nat"] is None


def test_prompt_too_long_for_a_window_is_an_error_row(model, tok):
    rows = scorer(model, tok, max_window_tokens=30).score(["long " * 40, "Q"], ["A. B.", "Fine."])
    assert rows.column("status").to_pylist() == ["error", "ok"]
    assert "no room" in rows.column("error")[0].as_py()


def test_oom_batch_is_split_not_dropped(model, tok, monkeypatch):
    import localnat.scoring.api as api

    real = api.forward_segments
    calls = []

    def flaky(model_, segs, prompts, chunk):
        calls.append(len(segs))
        if len(segs) > 1:
            raise torch.OutOfMemoryError("simulated")
        return real(model_, segs, prompts, chunk)

    monkeypatch.setattr(api, "forward_segments", flaky)
    s = scorer(model, tok, batch_tokens=400)
    table = s.score(PROMPTS, RESPONSES)
    assert s.stats["oom_splits"] > 0 and max(calls) > 1
    check_against_reference(table, model, tok, PROMPTS, RESPONSES)


def test_signals_on_known_logits():
    """Rank is 1-based, counts strictly higher logits, and is clipped at 100; entropy in nats.
    The head is an identity matrix, so each hidden row is a row of logits."""
    from localnat.scoring.forward import scored_signals

    vocab = 150
    logits = torch.zeros(4, vocab)
    logits[0, 7] = 5.0  # target 7 is the argmax: rank 1
    logits[1] = -torch.arange(vocab, dtype=torch.float32)  # target 120 has 120 above: clipped
    logits[2, :3] = 1.0  # three-way tie at the top, target among them: rank 1
    # row 3 uniform: entropy log(vocab), every token rank 1
    targets = torch.tensor([7, 120, 2, 42])
    head = torch.nn.Linear(vocab, vocab, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(vocab))
    logp, ranks, entropy = scored_signals(logits, targets, head, chunk=3)
    assert ranks.tolist() == [1, 100, 1, 1]
    expected = torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(logp, expected)
    assert abs(entropy[3].item() - np.log(vocab)) < 1e-5
    assert entropy[0].item() < entropy[2].item() < entropy[3].item()


def test_nofirst_leaves_one_token_steps_out(model, tok):
    """§5.3: a step of one token has no token after its first: it is left out of LN without
    first tokens; with every step one token long, there is nothing left (null)."""
    y = "The total cost is 8 dollars."
    starts = [
        s
        for s, _ in tok(y, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    ]
    table = scorer(model, tok, segmenter="column:steps").score([PROMPTS[0]], [y], [starts])
    row = table.to_pylist()[0]
    assert row["n_steps"] == len(starts) > 1
    assert row["local_nofirst"] is None and row["global_nofirst"] is None
    assert row["local_nat"] is not None  # the usual signals are all there
