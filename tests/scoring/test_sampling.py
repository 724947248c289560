"""Step sampling (docs/method.md §5.2): the estimator is unbiased, its standard error is the
stratified formula, the census stratum is always scored, and the scorer reads sampled steps
exactly as it would in an exact run."""

import math

import numpy as np
import pytest

from localnat import ScoreConfig, Scorer
from localnat.scoring.sampling import MIN_STEPS, domain_estimate, estimate, row_seed, sample_steps

# A long response: 40 sentence steps of varied text, so the tiny model scores them unevenly.
WORDS = "we add the two numbers then check the sum and the product twice".split()
LONG = " ".join(
    " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + i % 5)).capitalize() + "."
    for i in range(40)
)


def scorer(model, tok, **kw):
    return Scorer(ScoreConfig(student="tiny", windows=(1, 0.5), **kw), model=model, tokenizer=tok)


@pytest.fixture(scope="module")
def exact_row(tok):
    """Exact per-step scores of LONG under k=1 from a fixed tiny model (the population) and
    its global pass's step means (the control)."""
    from localnat.testing import tiny_model

    row = scorer(tiny_model("llama", len(tok)), tok).score(["Q?"], [LONG]).to_pylist()[0]
    return np.array(row["step_logprobs"]), np.array(row["step_global_logprobs"])


@pytest.fixture(scope="module")
def exact_steps(exact_row):
    return exact_row[0]


def census_of(p, first):
    census = np.zeros(p, dtype=bool)
    census[:first] = True
    return census


def test_census_always_scored_and_the_sample_is_stratified():
    census = census_of(40, 2)
    for seed in range(50):
        drawn = sample_steps(census, 0.2, seed)
        assert drawn.scored[:2].all()
        rest = np.flatnonzero(drawn.scored[2:]) + 2
        assert len(rest) == max(MIN_STEPS, math.ceil(0.2 * 38))  # 8
        assert [len(s) for s in drawn.strata] == [10, 10, 9, 9]  # contiguous blocks
        assert np.array_equal(np.concatenate(drawn.strata), np.arange(2, 40))
        for stratum in drawn.strata:  # two drawn in every block: early and late steps
            assert drawn.scored[stratum].sum() == 2
    draws = {tuple(sample_steps(census, 0.2, seed).scored) for seed in range(50)}
    assert len(draws) > 40  # the seed decides
    assert (
        sample_steps(census, 0.2, 7).scored.tolist() == sample_steps(census, 0.2, 7).scored.tolist()
    )


def test_small_rows_and_full_fraction_are_exact(exact_steps):
    p = len(exact_steps)
    for census, fraction in ((census_of(p, 2), 1.0), (census_of(6, 2), 0.1)):
        values = exact_steps[: len(census)]
        drawn = sample_steps(census, fraction, 0)
        assert drawn.scored.all()  # F = 1, or 4 others at most: all of them
        est, se = estimate(values, drawn)
        assert est == pytest.approx(values.mean()) and se == 0


def test_se_is_the_stratified_formula_with_finite_population_correction():
    values = np.arange(12, dtype=float) ** 2  # steps 0, 1 census; 10 others in 2 strata of 5
    drawn = sample_steps(census_of(12, 2), 0.3, 3)
    assert [len(s) for s in drawn.strata] == [5, 5]
    assert drawn.scored.sum() == 2 + 4
    total, var = values[:2].sum(), 0.0
    for stratum in drawn.strata:
        y = values[stratum[drawn.scored[stratum]]]
        total += 5 * y.mean()
        var += 25 * (1 - 2 / 5) * np.var(y, ddof=1) / 2
    est, se = estimate(values, drawn)
    assert est == pytest.approx(total / 12) and se == pytest.approx(math.sqrt(var) / 12)


def test_estimator_is_unbiased_over_seeds(exact_steps):
    census = census_of(len(exact_steps), 2)
    runs = np.array([estimate(exact_steps, sample_steps(census, 0.2, s)) for s in range(3000)])
    truth, spread = exact_steps.mean(), runs[:, 0].std()
    assert spread > 0
    assert abs(runs[:, 0].mean() - truth) < 4 * spread / math.sqrt(len(runs))
    # se^2 estimates the variance without bias: its mean matches the spread over seeds
    assert np.mean(runs[:, 1] ** 2) == pytest.approx(spread**2, rel=0.15)
    # and the interval covers the truth about as often as it should
    assert np.mean(np.abs(runs[:, 0] - truth) <= 2 * runs[:, 1]) > 0.85


def test_the_global_pass_as_control_keeps_the_estimate_unbiased_and_narrows_it(exact_row):
    """The difference estimator (§5.2): with every step's global mean known, unbiased over
    seeds whatever the control, its se^2 the spread^2 over seeds; narrower than without it
    when the control moves with the step scores (a trained student's do: the tiny random
    model's do not, so a tracking control stands in for one)."""
    values, control = exact_row
    census = census_of(len(values), 2)
    draws = [sample_steps(census, 0.2, s) for s in range(3000)]
    plain = np.array([estimate(values, d)[0] for d in draws])
    tracking = values - 0.4 + np.random.default_rng(3).normal(0, 0.05, len(values))
    truth = values.mean()
    for base in (control, tracking):
        runs = np.array([estimate(values, d, base) for d in draws])
        spread = runs[:, 0].std()
        assert spread > 0 and abs(runs[:, 0].mean() - truth) < 4 * spread / math.sqrt(len(runs))
        assert np.mean(runs[:, 1] ** 2) == pytest.approx(spread**2, rel=0.15)
        assert np.mean(np.abs(runs[:, 0] - truth) <= 2 * runs[:, 1]) > 0.85
    assert spread < plain.std() / 3
    # by hand: census as is; per stratum the control's total and N_h times the mean residual
    drawn, total, var = draws[0], values[:2].sum(), 0.0
    for stratum in drawn.strata:
        d = (values - control)[stratum[drawn.scored[stratum]]]
        size, n = len(stratum), len(d)
        total += control[stratum].sum() + size * d.mean()
        var += size**2 * (1 - n / size) * np.var(d, ddof=1) / n
    est, se = estimate(values, drawn, control)
    assert est == pytest.approx(total / len(values)) and se == pytest.approx(math.sqrt(var) / 40)
    # a control missing a step (a global pass cut off) is no control: the plain estimate
    cut = [*control[:-1], None]
    assert estimate(values, drawn, cut) == pytest.approx(estimate(values, drawn))


def test_the_first_token_free_ln_is_estimated_over_its_steps_without_bias(exact_steps):
    """§5.3 under sampling: the mean over steps of two tokens or more, from the sampled ones
    among them (a step's token count is known for every step)."""
    rng = np.random.default_rng(7)
    values = exact_steps + rng.normal(0, 0.3, len(exact_steps))
    eligible = rng.random(len(exact_steps)) < 0.7
    census = census_of(len(exact_steps), 2)
    runs = np.array(
        [
            domain_estimate(
                np.where(eligible, values, np.nan), sample_steps(census, 0.2, s), eligible
            )
            for s in range(3000)
        ]
    )
    truth, spread = values[eligible].mean(), runs.std()
    assert spread > 0 and abs(runs.mean() - truth) < 4 * spread / math.sqrt(len(runs))
    every = sample_steps(census, 1.0, 0)  # a full sample: the exact mean
    assert domain_estimate(np.where(eligible, values, np.nan), every, eligible) == pytest.approx(
        truth
    )
    assert domain_estimate(values, every, np.zeros(len(values), bool)) is None


def test_scorer_reads_sampled_steps_exactly(model, tok):
    exact = scorer(model, tok).score(["Q?", "Q2?"], [LONG, "Short. Answer here."]).to_pylist()
    s = scorer(model, tok, sample_steps=0.2, batch_tokens=256)
    rows = s.score(["Q?", "Q2?"], [LONG, "Short. Answer here."]).to_pylist()
    assert rows == s.score(["Q?", "Q2?"], [LONG, "Short. Answer here."]).to_pylist()  # reruns
    row, ref = rows[0], exact[0]
    got = row["step_logprobs"]
    scored = [i for i, x in enumerate(got) if x is not None]
    assert len(scored) == row["steps_scored"] < row["n_steps"] == ref["n_steps"]
    assert scored[:2] == [0, 1]  # k=1: steps 1 and 2 are the head's (census)
    np.testing.assert_allclose(
        [got[i] for i in scored], [ref["step_logprobs"][i] for i in scored], atol=1e-4
    )
    # the draw is the one seeded by the row's tokens, and local_nat is its estimate
    item = s.prepare("Q?", LONG)
    seed = row_seed(item.prompt_ids.tobytes(), item.response_ids.tobytes())
    drawn = sample_steps(census_of(row["n_steps"], 2), 0.2, seed)
    assert np.flatnonzero(drawn.scored).tolist() == scored
    # (with the global pass run whole, its step means are the control)
    est, se = estimate(np.array(ref["step_logprobs"]), drawn, ref["step_global_logprobs"])
    assert abs(row["local_nat"] - est) < 1e-4 and abs(row["local_nat_se"] - se) < 1e-4
    assert row["local_nat_se"] > 0
    # LN alone runs no whole global pass: the plain estimate of the same draw
    alone = scorer(model, tok, sample_steps=0.2, signals=("local",)).score(["Q?"], [LONG])
    alone = alone.to_pylist()[0]
    est, se = estimate(np.array(ref["step_logprobs"]), drawn)
    assert abs(alone["local_nat"] - est) < 1e-4 and abs(alone["local_nat_se"] - se) < 1e-4
    # GN and the other signals come from the global pass: untouched by sampling
    for col in ("global_nat", "rsr", "global_entropy"):
        assert row[col] == pytest.approx(ref[col], abs=1e-6)
    # a two-step row has no step outside the census: exact
    assert rows[1]["local_nat_se"] == 0 and rows[1]["local_nat"] == pytest.approx(
        exact[1]["local_nat"], abs=1e-6
    )


def response(shift: int, steps: int = 30) -> str:
    """A long response of `steps` sentences; `shift` makes each candidate's text its own."""
    return " ".join(
        " ".join(WORDS[(i * shift + j) % len(WORDS)] for j in range(3 + (i + shift) % 5))
        .capitalize()
        .rstrip()
        + "."
        for i in range(steps)
    )


def test_rounds_grow_each_stratums_sample_to_every_step():
    """A round's sample holds the one before and doubles it in every stratum; estimating from
    the steps known at a round is the round's own estimate; at the end every step is in."""
    from localnat.scoring.sampling import strata_ids, stratified

    census = census_of(40, 2)
    values = np.linspace(-3, -1, 40) ** 2
    for seed in range(20):
        before = sample_steps(census, 0.2, seed)
        for t in range(1, 6):
            now = sample_steps(census, 0.2, seed, t)
            assert (now.scored >= before.scored).all()  # nested
            for stratum in now.strata:
                assert now.scored[stratum].sum() == min(len(stratum), 2 << t)
            known = np.where(now.scored, values, np.nan)
            assert stratified(known, strata_ids(now))[:2] == pytest.approx(estimate(values, now))
            before = now
        assert before.scored.all() and estimate(values, before) == (values.mean(), 0.0)


def test_racing_rounds_score_only_new_steps_and_end_exact(model, tok):
    """`score_round` scores the steps a round adds, nothing twice: with round 0's they are
    the round's sample, and once every step is in, the exact LN."""
    from localnat.scoring.sampling import stratified

    prompts, texts = ["Q?", "Q2?"], [LONG, response(2, 24)]
    exact_scorer = scorer(model, tok)
    exact = exact_scorer.score(prompts, texts).to_pylist()
    s = scorer(model, tok, sample_steps=0.2)
    rows = s.score(prompts, texts).to_pylist()
    known = [np.array([np.nan if x is None else x for x in r["step_logprobs"]]) for r in rows]
    items = [s.prepare(p, r) for p, r in zip(prompts, texts)]
    strata = {}
    for t in range(1, 6):
        before = s.stats["tokens"]
        for i, (k, got) in enumerate(zip(known, s.score_round(items, t))):
            assert got["status"] == "ok"
            strata[i] = np.array(got["step_strata"])
            assert np.isnan(k[got["round_steps"]]).all()  # new steps only
            k[got["round_steps"]] = got["round_scores"]
            est, se, _ = stratified(k, np.array(got["step_strata"]))
            assert (se == 0) == (not np.isnan(k).any())
        assert s.stats["tokens"] >= before
    for i, (k, ref, row) in enumerate(zip(known, exact, rows)):
        assert not np.isnan(k).any()
        np.testing.assert_allclose(k, ref["step_logprobs"], atol=1e-4)
        assert stratified(k, np.full(len(k), -1))[0] == pytest.approx(ref["local_nat"], abs=1e-5)
        # every step in, the control cancels: the exact LN with no error
        got = stratified(k, strata[i], row["step_global_logprobs"])
        assert got[:2] == pytest.approx((ref["local_nat"], 0.0), abs=1e-5)
    with pytest.raises(ValueError, match="needs sample_steps"):
        exact_scorer.score_round(items, 1)


def test_racing_picks_within_epsilon_of_the_exact_best(model, tok):
    """Sample at F = 0.2, race round by round (the job's loop, its rounds scored in this
    process): every prompt's pick is within epsilon of its best candidate's exact LN; a
    wider epsilon settles in fewer rounds."""
    from localnat.curate.choose.racing import in_process
    from localnat.curate.choose.selection import race, race_pick, race_rounds

    prompts = [f"Question {q}?" for q in range(4) for _ in range(3)]
    texts = [response(1 + q + 4 * c, 16 + 4 * c) for q in range(4) for c in range(3)]
    exact = scorer(model, tok).score(prompts, texts).to_pandas()
    best = exact.assign(prompt_id=prompts).groupby("prompt_id")["local_nat"].max()
    s = scorer(model, tok, sample_steps=0.2)
    df = s.score(prompts, texts).to_pandas()
    df = df.assign(row_id=range(len(texts)), prompt_id=prompts, teacher="t", is_correct=True)
    items = [s.prepare(p, r) for p, r in zip(prompts, texts)]
    last = {}
    for epsilon in (0.0, 1.0):
        advance = in_process(s, items, df.to_dict("records"))
        looked, settled, _ = race(df, epsilon, 0.01, race_rounds(0.2), advance)
        for p, r in zip(*race_pick(looked)[["prompt_id", "row_id"]].to_numpy().T):
            assert exact["local_nat"][r] >= best[p] - epsilon - 1e-6
        last[epsilon] = max(settled.values())
    assert last[1.0] < last[0.0]
