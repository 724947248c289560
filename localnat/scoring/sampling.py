"""Step sampling (docs/method.md §5.2): an unbiased estimate of LN, with a standard error,
from a stratified random sample of the steps.

Steps whose windows are a prefix of the response (every piece has context start 0) are
scored together by one short forward, the head, so they are always scored: the *census*
stratum. The other N steps are cut into
H contiguous blocks along the response (strata) and a simple random sample without
replacement is drawn in each, n = min(N, max(MIN_STEPS, ceil(F * N))) in all, about two per
stratum, so early and late steps are both represented and each stratum's variance can be
estimated. With l_i the step scores, p the number of steps, stratum h of N_h steps and n_h
sampled, sample mean m_h and sample variance s_h^2 (ddof 1):

    LN_hat = (sum_{census} l_i + sum_h N_h m_h) / p
    se     = sqrt( sum_h N_h^2 (1 - n_h / N_h) s_h^2 / n_h ) / p     (finite population corr.)

Within a stratum each step is equally likely to be drawn, so E[m_h] is the stratum's mean and
LN_hat is unbiased; se is the usual stratified estimate of its standard deviation.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

MIN_STEPS = 4  # sampled steps per row at least (two strata of two): fewer gives no variance


@dataclass
class StepSample:
    """Which steps to score, and the strata the estimator needs."""

    scored: np.ndarray  # [p] bool: census steps and sampled ones
    census: np.ndarray  # [p] bool
    strata: list[np.ndarray]  # per stratum, its step indices (population, not only sampled)


def row_seed(*parts: bytes) -> int:
    """A seed from a row's content (its token ids): reruns draw the same steps."""
    return int.from_bytes(hashlib.blake2b(b"\0".join(parts), digest_size=8).digest(), "little")


def sample_steps(census: np.ndarray, fraction: float, seed: int, round_: int = 0) -> StepSample:
    """Draw the steps to score: every census step, and a stratified sample of the others.
    Each stratum's steps are taken in one seeded random order, its first two (three in the
    largest when n is odd) at round 0 and twice as many at each round after: a round's
    sample holds the one before (racing, docs/method.md §5.2), and is again a simple random
    sample without replacement within each stratum."""
    rest = np.flatnonzero(~census)
    n = min(len(rest), max(MIN_STEPS, math.ceil(fraction * len(rest))))
    scored = census.copy()
    if n == len(rest):  # the sample would be everything: exact, one stratum, no variance
        scored[rest] = True
        return StepSample(scored, census, [rest] if len(rest) else [])
    strata = np.array_split(rest, n // 2)  # contiguous, sizes differ by at most 1, each >= 2
    sizes = [2] * len(strata)
    if n % 2:  # n = 2H + 1 < N, so the largest stratum has at least 3 steps
        sizes[int(np.argmax([len(s) for s in strata]))] += 1
    rng = np.random.default_rng(seed)
    for stratum, size in zip(strata, sizes):
        scored[rng.permutation(stratum)[: size << round_]] = True
    return StepSample(scored, census, strata)


def strata_ids(sample: StepSample) -> np.ndarray:
    """Per step its stratum (-1 for a census step): with the step scores known so far, all
    `stratified` needs to estimate LN again."""
    ids = np.full(len(sample.scored), -1, np.int32)
    for h, stratum in enumerate(sample.strata):
        ids[stratum] = h
    return ids


def stratified(
    step_scores: np.ndarray, ids: np.ndarray, base: np.ndarray | None = None
) -> tuple[float, float, float]:
    """(LN estimate, standard error, its degrees of freedom) from the steps scored so far
    (NaN: not yet), each step's stratum (`strata_ids`) and the control (`estimate`'s
    `base`): `estimate` and `freedom` for a sample grown round by round."""
    census = ids < 0
    strata = [np.flatnonzero(ids == h) for h in range(int(ids.max(initial=-1)) + 1)]
    sample = StepSample(~np.isnan(step_scores), census, strata)
    return (*estimate(step_scores, sample, base), freedom(step_scores, sample, base))


def freedom(step_scores: np.ndarray, sample: StepSample, base: np.ndarray | None = None) -> float:
    """The degrees of freedom of `estimate`'s standard error (Satterthwaite: the strata's
    variance terms v_h = N_h^2 (1 - n_h/N_h) s_h^2 / n_h, each on n_h - 1 of them):
    (sum v_h)^2 / sum(v_h^2 / (n_h - 1)). Two steps a stratum leave few: a bound on the
    estimate takes Student's t at these, not the normal (docs/method.md §5.2). NaN when the
    estimate is exact. `base`: as `estimate`'s."""
    terms = []
    residual = step_scores - control(base, len(step_scores))
    for stratum in sample.strata:
        drawn = residual[stratum[sample.scored[stratum]]]
        size, n = len(stratum), len(drawn)
        if n < size:
            terms.append((size**2 * (1 - n / size) * float(drawn.var(ddof=1)) / n, n - 1))
    total = sum(v for v, _ in terms)
    if not total:
        return float("nan")
    return total**2 / sum(v**2 / d for v, d in terms)


def estimate(
    step_scores: np.ndarray, sample: StepSample, base: np.ndarray | None = None
) -> tuple[float, float]:
    """(LN estimate, standard error) from the scores of the scored steps (others ignored);
    `base`: every step's control, the global pass's step means (None: the plain stratified
    estimate)."""
    p = len(step_scores)
    base = control(base, p)
    residual = step_scores - base
    total, var = float(step_scores[sample.census].sum()), 0.0
    for stratum in sample.strata:
        drawn = residual[stratum[sample.scored[stratum]]]
        size, n = len(stratum), len(drawn)
        total += float(base[stratum].sum()) + size * float(drawn.mean())
        if n < size:
            var += size**2 * (1 - n / size) * float(drawn.var(ddof=1)) / n
    return total / p, math.sqrt(var) / p


def control(base, p: int) -> np.ndarray:
    """The difference estimator's control per step: the global pass's step means when it
    has one for every step (a response it cut off has none past the cut), else zeros."""
    if base is None:
        return np.zeros(p)
    base = np.array(base, float)  # None (no step mean) -> NaN
    return base if len(base) == p and np.isfinite(base).all() else np.zeros(p)


def domain_estimate(values: np.ndarray, sample: StepSample, eligible: np.ndarray) -> float | None:
    """The mean of `values` over the `eligible` steps (LN without first tokens: steps of two
    tokens or more, §5.3) from a sample: census steps as they are; in each stratum its
    eligible steps, a count known for every step, times the mean over its sampled eligible
    ones (a simple random sample of them, given one); a stratum none of whose sampled steps
    is eligible takes the other strata's mean. None when no eligible step was scored."""
    census = sample.census & eligible
    total, count = float(values[census].sum()), int(census.sum())
    drawn_all = values[sample.scored & ~sample.census & eligible]
    fallback = float(drawn_all.mean()) if len(drawn_all) else None
    for stratum in sample.strata:
        size = int(eligible[stratum].sum())
        if not size:
            continue
        drawn = values[stratum[sample.scored[stratum] & eligible[stratum]]]
        mean = float(drawn.mean()) if len(drawn) else fallback
        if mean is None:
            continue
        total += size * mean
        count += size
    return total / count if count else None
