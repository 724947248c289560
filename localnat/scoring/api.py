"""The Python API: a `Scorer` that loads the student once and scores many batches, and the
one-call `score_responses`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pyarrow as pa
import torch

from .batching import GLOBAL, Segment, forward_cost, make_batches, shared_prompts
from .config import ScoreConfig
from .forward import Scored, encode_prompt_state, forward_segments
from .prepare import Prepared, Preparer
from .sampling import (
    StepSample,
    domain_estimate,
    estimate,
    freedom,
    row_seed,
    sample_steps,
    strata_ids,
)
from .schema import result_schema
from .student import context_length, load_model, load_tokenizer
from .windows import (
    Plan,
    census,
    global_nofirst,
    global_only,
    global_step_means,
    plan_windows,
    restrict,
    step_means,
)


def _finite(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def rank_surprisal_ratio(ranks: np.ndarray, logprobs: np.ndarray) -> float:
    """Sum of clipped ranks over the sum of surprisals (arXiv 2601.14249; lower = more
    suitable); the surprisal sum is floored as in the authors' code, so a response the
    student predicts with certainty gives a large finite value, not a division by zero."""
    return float(ranks.sum() / max(-logprobs.sum(), 1e-12))


def resolved(cfg: ScoreConfig, context: int, cuda: bool) -> ScoreConfig:
    """`cfg` with its policies resolved for a student of `context` positions on a CUDA
    device or not: max_tokens (the context), max_window_tokens (4096, within it), batch
    tokens (32768 on CUDA, 2048 on CPU)."""
    max_tokens = cfg.max_tokens or context
    return replace(
        cfg,
        max_tokens=max_tokens,
        max_window_tokens=min(cfg.max_window_tokens or 4096, max_tokens),
        batch_tokens=cfg.batch_tokens or (32768 if cuda else 2048),
    )


def plan_row(item: Prepared, cfg: ScoreConfig) -> tuple[Plan, list[StepSample] | None]:
    """A prepared row's windows (`cfg` resolved), cut to what its signals need (no window
    for global signals alone, no global pass for local ones alone); under step sampling, the
    steps drawn per setting (seeded by the row's tokens) and the plan cut down to them.
    Raises ValueError (no room)."""
    plan = plan_windows(
        item.bounds, len(item.prompt_ids), cfg.windows, cfg.max_tokens, cfg.max_window_tokens
    )
    if not cfg.needs("windows"):
        return global_only(plan), None
    drawn = None
    keep = [np.ones(len(item.bounds) - 1, dtype=bool)] * len(cfg.windows)
    if cfg.sample_steps is not None:
        seed = row_seed(item.prompt_ids.tobytes(), item.response_ids.tobytes())
        drawn = [
            sample_steps(census(plan, s), cfg.sample_steps, seed) for s in range(len(cfg.windows))
        ]
        keep = [d.scored for d in drawn]
    if drawn is None and cfg.needs("global"):
        return plan, None  # every window and the whole global pass, as planned
    return restrict(plan, keep, global_pass=cfg.needs("global")), drawn


def plan_segments(items: list[Prepared], plans: dict, signals: bool) -> list[Segment]:
    """Every forward segment of the plans (item index -> Plan): the windows' keyed (item,
    context start), the global pass's (item, GLOBAL), grouped by prompt; `signals`: the global
    pass also gives rank and entropy."""
    segments = []
    for r, plan in plans.items():
        item = items[r]
        group = item.prompt_ids.tobytes()
        for a, (lo, end) in plan.segments.items():
            tokens = item.response_ids[a:end]
            segments.append(Segment((r, a), group, item.prompt_ids, tokens, lo - a))
        if plan.global_pass:
            tokens = item.response_ids[: plan.n_keep]
            segments.append(Segment((r, GLOBAL), group, item.prompt_ids, tokens, 0, signals, True))
    return segments


class Scorer:
    """Holds one student; scores prepared pairs, each prompt computed once per call.

    Example:
        scorer = Scorer(ScoreConfig(student="path/to/model", windows=(4, 0.25)))
        table = scorer.score(prompts, responses)
    """

    def __init__(self, cfg: ScoreConfig, model=None, tokenizer=None):
        self.model = model if model is not None else load_model(cfg)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg)
        cuda = next(self.model.parameters()).device.type == "cuda"
        self.cfg = resolved(cfg, context_length(self.model), cuda)
        self.prepare = Preparer(self.tokenizer, self.cfg)
        self.schema = result_schema(self.cfg.windows)
        self.stats = {
            "forward_s": 0.0,
            "padded_tokens": 0,
            "tokens": 0,
            "batches": 0,
            "oom_splits": 0,
        }

    def score(self, prompts: Sequence, responses: Sequence, steps: Sequence | None = None):
        """Score pairs; returns a pyarrow Table (schema `result_schema`), one row per pair."""
        if len(prompts) != len(responses) or (steps is not None and len(steps) != len(prompts)):
            raise ValueError("prompts, responses (and steps) must have the same length")
        items = [
            self.prepare(p, r, None if steps is None else steps[i])
            for i, (p, r) in enumerate(zip(prompts, responses))
        ]
        return pa.Table.from_pylist(self.score_prepared(items), schema=self.schema)

    def score_prepared(self, items: list[Prepared]) -> list[dict]:
        """Score prepared items; one result dict per item, in order, errors included."""
        plans, samples, errors = self._plans(items)
        scored = self._run(items, plans, errors, signals=self.cfg.needs("ranks"))
        return [
            {"status": "error", "error": errors[r]}
            if r in errors
            # KeyError below = a slot never filled: a bug, not bad data
            else self._result(
                item, plans[r], samples[r], {a: scored[(r, a)] for a in _keys(plans[r])}
            )
            for r, item in enumerate(items)
        ]

    def score_round(self, items: list[Prepared], round_: int) -> list[dict]:
        """Racing's round `round_` >= 1 (docs/method.md §5.2): per item, the first setting's
        steps its sample holds at this round and did not at the one before (the seeded order
        of `score_prepared`'s draw, round 0), and nothing else: the head only where
        such a step reads from it. Returns per item `round_steps` (their indices),
        `round_scores`, `step_strata` (each step's stratum, -1 census: with every round's
        scores, what `sampling.stratified` estimates from) and `n_response_tokens`. Schema:
        `schema.ROUND_SCHEMA`."""
        if self.cfg.sample_steps is None or round_ < 1:
            raise ValueError("score_round needs sample_steps and a round >= 1")
        plans, new, ids, errors = {}, {}, {}, {}
        for r, item in enumerate(items):
            if item.error:
                errors[r] = item.error
                continue
            try:
                plans[r], new[r], ids[r] = self._round_plan(item, round_)
            except ValueError as err:
                errors[r] = str(err)
        scored = self._run(items, plans, errors, signals=False)
        out = []
        for r in range(len(items)):
            if r in errors:
                out.append({"status": "error", "error": errors[r]})
                continue
            lps = {a: scored[(r, a)].logprobs for a in plans[r].segments}
            means = step_means(plans[r], lps, 0, new[r])
            out.append(
                {
                    "status": "ok",
                    "error": None,
                    "n_response_tokens": len(items[r].response_ids),
                    "round_steps": np.flatnonzero(new[r]).tolist(),
                    "round_scores": means[new[r]].tolist(),
                    "step_strata": ids[r].tolist(),
                }
            )
        return out

    def _round_plan(self, item: Prepared, round_: int):
        """(the plan of the steps new at `round_`, which they are, every step's stratum)."""
        cfg = self.cfg
        plan = plan_windows(
            item.bounds, len(item.prompt_ids), cfg.windows, cfg.max_tokens, cfg.max_window_tokens
        )
        seed = row_seed(item.prompt_ids.tobytes(), item.response_ids.tobytes())
        steps = census(plan, 0)
        now = sample_steps(steps, cfg.sample_steps, seed, round_)
        new = now.scored & ~sample_steps(steps, cfg.sample_steps, seed, round_ - 1).scored
        rest = restrict(plan, [new] + [np.zeros_like(new)] * (len(cfg.windows) - 1), False)
        return rest, new, strata_ids(now)

    def _plans(self, items: list[Prepared]):
        """Per valid item its plan and sample (`_plan`); errors per item index."""
        plans, samples = {}, {}
        errors = {r: item.error for r, item in enumerate(items) if item.error}
        for r, item in enumerate(items):
            if item.error:
                continue
            try:
                plans[r], samples[r] = self._plan(item)
            except ValueError as err:
                errors[r] = str(err)
        return plans, samples, errors

    def _run(self, items, plans: dict, errors: dict, signals: bool) -> dict:
        """Forward every segment of the plans, batched by tokens, each prompt encoded once.
        Returns (item index, context start) -> Scored; `signals`: the global pass's logits
        also give rsr and global_entropy."""
        batches = make_batches(plan_segments(items, plans, signals), self.cfg.batch_tokens)
        prompts = {}
        for group, prompt in shared_prompts(batches).items():
            prompts[group] = encode_prompt_state(self.model, prompt)
            self.stats["tokens"] += len(prompt)
            self.stats["padded_tokens"] += len(prompt)
        scored: dict[tuple[int, int], Scored] = {}
        for batch in batches:
            for seg, out in self._forward(batch, prompts, errors):
                assert seg.key not in scored, f"segment {seg.key} scored twice"
                scored[seg.key] = out
        return scored

    def _plan(self, item: Prepared) -> tuple[Plan, list[StepSample] | None]:
        return plan_row(item, self.cfg)

    def _result(self, item: Prepared, plan, samples, scored: dict) -> dict:
        """One row's result columns; the signals not asked for (`cfg.signals`) are null."""
        cfg = self.cfg
        lps = {a: s.logprobs for a, s in scored.items()}
        out = {
            "status": "ok",
            "error": None,
            **dict.fromkeys(self.schema.names[2:]),
            "step_starts": [s for s, _ in item.spans],
            "step_ends": [e for _, e in item.spans],
            "step_tokens": np.diff(item.bounds).tolist(),
            "n_prompt_tokens": len(item.prompt_ids),
            "n_response_tokens": int(item.bounds[-1]),
            "n_steps": len(item.spans),
            "global_truncated": plan.global_truncated,
            "window_truncated": plan.window_truncated,
        }
        # the whole global pass's step means: step sampling's control (§5.2)
        glob = scored[GLOBAL] if cfg.needs("global") else None
        glob_steps = None if glob is None else global_step_means(plan, glob.logprobs, item.bounds)
        if cfg.needs("windows"):
            out.update(_local(item, plan, samples, lps, cfg.windows, glob_steps))
        if glob is not None:
            out["global_nat"] = float(glob.logprobs.mean())
            out["global_nofirst"] = _finite(global_nofirst(plan, glob.logprobs, item.bounds))
            out["surprisal_sum"] = float(-glob.logprobs.sum())
            out["step_global_logprobs"] = glob_steps
        if cfg.needs("ranks"):
            out["rsr"] = rank_surprisal_ratio(glob.ranks, glob.logprobs)
            out["global_entropy"] = float(glob.entropy.mean())
            out["rank_sum"] = float(glob.ranks.sum())
        return out

    def _forward(self, batch: list[Segment], prompts: dict, errors: dict):
        """Yield (segment, log-probs). An out-of-memory batch is split in halves and retried;
        a single segment that still does not fit fails only its response."""
        try:
            start = time.perf_counter()
            out = forward_segments(self.model, batch, prompts, self.cfg.head_chunk)
            self.stats["forward_s"] += time.perf_counter() - start
            self.stats["batches"] += 1
            tokens, padded = forward_cost(batch)
            self.stats["tokens"] += tokens
            self.stats["padded_tokens"] += padded
            yield from zip(batch, out)
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(batch) > 1:
                self.stats["oom_splits"] += 1
                mid = len(batch) // 2
                yield from self._forward(batch[:mid], prompts, errors)
                yield from self._forward(batch[mid:], prompts, errors)
                return
            seg = batch[0]
            errors[seg.key[0]] = f"out of memory on a window of {len(seg.tokens)} tokens"


def _keys(plan: Plan) -> list:
    """A plan's segment keys: the windows' context starts, and GLOBAL when the pass runs."""
    return [*plan.segments, *([GLOBAL] if plan.global_pass else [])]


def _local(item: Prepared, plan: Plan, samples, lps: dict, windows, control=None) -> dict:
    """The windows' columns of a row: LN per setting (estimated, with its standard error,
    under step sampling: `control`, the global pass's step means when it ran whole), LN
    without first tokens, the step scores."""
    keep = [d.scored for d in samples] if samples else [None] * len(windows)
    means = [step_means(plan, lps, s, keep[s]) for s in range(len(windows))]
    if samples:  # (estimate, se) per setting
        ests = [estimate(m, d, control) for m, d in zip(means, samples)]
        df = freedom(means[0], samples[0], control)
    else:  # exact: every step scored, no sampling error
        ests, df = [(float(m.mean()), 0.0) for m in means], float("nan")
    # without each step's first token (§5.3): over the steps of two tokens or more
    firstless = step_means(plan, lps, 0, keep[0], drop_first=True)
    if samples:
        nofirst = domain_estimate(firstless, samples[0], np.diff(item.bounds) >= 2)
    else:
        nofirst = float(np.nanmean(firstless)) if np.isfinite(firstless).any() else None
    return {
        "local_nat": ests[0][0],
        "local_nat_se": ests[0][1],
        "local_nat_df": _finite(df),
        "steps_scored": int(np.isfinite(means[0]).sum()),
        **{f"local_nat_{w.name}": e for w, (e, _) in zip(windows, ests)},
        "local_nofirst": nofirst,
        "step_logprobs": [None if np.isnan(x) else x for x in means[0].tolist()],
    }


def score_responses(
    prompts: Sequence,
    responses: Sequence,
    student: str | None = None,
    *,
    windows: Sequence = (4,),
    segmenter: str = "sentence",
    steps: Sequence | None = None,
    device: str = "auto",
    dtype: str = "auto",
    **options,
) -> pa.Table:
    """Score (prompt, response) pairs with a student; one result row per pair.

    Args:
        prompts, responses: equal-length sequences of strings (bad values give error rows).
        student: local directory or hub id; None = the offline default student.
        windows: window settings, e.g. `(4, 0.25)`; the first is reported as `local_nat`.
        segmenter: `sentence`, `line`, `paragraph` or `column:NAME` (then pass `steps`).
        steps: per pair, a list of step strings or start offsets (for `column:NAME`).
        device, dtype: `auto` picks CUDA + bf16 when present, else CPU + fp32.
        **options: any other `ScoreConfig` field (max_tokens, batch_tokens, ...).
    """
    cfg = ScoreConfig(
        student=student,
        windows=tuple(windows),
        segmenter=segmenter,
        device=device,
        dtype=dtype,
        **options,
    )
    return Scorer(cfg).score(prompts, responses, steps)
