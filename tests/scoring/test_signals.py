"""Only the signals asked for: the student runs what they need and nothing else, and what it
computes is the same number an every-signal run gives."""

import numpy as np
import pytest

from localnat.testing import PROMPTS, RESPONSES, scorer

LOCAL = [
    "local_nat",
    "local_nat_k4",
    "local_nat_w25",
    "local_nofirst",
    "step_logprobs",
    "steps_scored",
]
GLOBAL = ["global_nat", "global_nofirst", "surprisal_sum", "step_global_logprobs"]
RANKS = ["rsr", "global_entropy", "rank_sum"]


# responses of 1 to 10 times a test response: the global passes' lengths differ from the
# windows', so windows batched with them would be padded (and summed) otherwise
LONG = [" ".join([r] * m) for m in (1, 3, 6, 10) for r in RESPONSES]


def scored(model, tok, signals=None, **kw):
    s = scorer(model, tok, windows=(4, 0.25), **({"signals": signals} if signals else {}), **kw)
    rows = s.score([PROMPTS[i % len(PROMPTS)] for i in range(len(LONG))], LONG).to_pylist()
    return rows, s.stats["tokens"]


@pytest.mark.parametrize("sample_steps", [None, 0.5])
def test_each_signal_alone_is_the_every_signal_number_for_fewer_tokens(model, tok, sample_steps):
    every, all_tokens = scored(model, tok, sample_steps=sample_steps)
    local, local_tokens = scored(model, tok, ("local",), sample_steps=sample_steps)
    glob, glob_tokens = scored(model, tok, ("global", "rsr"), sample_steps=sample_steps)
    # sampled, LN is estimated with the global pass as control where it runs (§5.2): the
    # step scores are the same, the estimates are not
    same = LOCAL if sample_steps is None else ["step_logprobs", "steps_scored"]
    for a, ln, gn in zip(every, local, glob):
        assert all(ln[c] == a[c] for c in same)  # bit-identical
        assert all(ln[c] is None for c in GLOBAL + RANKS)
        assert all(gn[c] == a[c] for c in GLOBAL + ["rsr", "rank_sum"])
        assert all(gn[c] is None for c in LOCAL)
        assert ln["n_response_tokens"] == gn["n_response_tokens"] == a["n_response_tokens"]
    assert local_tokens < all_tokens and glob_tokens < all_tokens
    # global alone runs the global pass and nothing else: each response once, and prompts
    from localnat.scoring.student import encode_prompt

    longest_prompt = max(len(encode_prompt(tok, p)) for p in PROMPTS)
    responses = sum(r["n_response_tokens"] for r in every)
    assert responses < glob_tokens <= responses + len(every) * longest_prompt


def test_unknown_signals_are_refused():
    from localnat.fields import OptionError
    from localnat.scoring.config import ScoreConfig

    assert ScoreConfig(signals=("local,global", "rsr")).signals == ("local", "global", "rsr")
    with pytest.raises(OptionError, match="signals: unknown"):
        ScoreConfig(signals=("local", "gn"))
    np.testing.assert_equal(ScoreConfig().needs("windows"), True)
