"""Racing selection in the job (docs/method.md §5.2): under step sampling, each prompt's
choice is within `--race-epsilon` of its best candidate's exact LN with probability
1 - `--race-delta`, for the steps the bounds need and no more.

    round 0: the scores pass's sampled LN and se per candidate
      -> race_round: drop what cannot be best; settle the prompts the bounds decide
      -> round t >= 1, Pass("race-t") into race/rTT/: the undecided rows' steps new in their
         sample at round t (twice round t-1's per stratum) -> LN and se again (`stratified`)
      -> ... until every prompt is settled (a row whose sample is every step is exact)
      -> race_pick: per prompt the best lower bound

Racing runs when `--sample-steps` is set and `--select-by local` (the other signals are
exact already).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ...logs import LOG
from ...redact import redact
from ...scoring.config import ScoreConfig
from ...scoring.sampling import stratified
from ..run.directory import Executed, Run
from ..run.outputs import counts
from ..run.passes import race_pass
from ..run.resume import InputChanged
from ..settings import Choosing
from ..signals import ROUND_COLUMNS
from ..storage import join, read_parquet_files
from .selection import candidates, race, race_pick, race_rounds


def races(choosing: Choosing, score: ScoreConfig) -> bool:
    """Whether this run races (sampled LN, selected by LN)."""
    return score.sample_steps is not None and choosing.select_by == "local"


def raced_selection(
    run: Run, choosing: Choosing, fraction: float, df: pd.DataFrame, scored: Executed
) -> tuple[pd.DataFrame, dict]:
    """The racing choice per prompt (`select`'s columns; `settled_by`: `sample` when round
    0's bounds decided, else `round T`) and counts: rounds, rows rescored per round, prompts
    settled per round, the student's response and model tokens of the rounds (cache hits
    not counted). `fraction`: the sample's (`--sample-steps`); `scored`: the scores pass."""
    correct_only = choosing.correct_column is not None
    stats = dict.fromkeys(("race_response_tokens", "race_model_tokens"), 0)
    stats |= dict.fromkeys(("race_padded_tokens", "race_failed"), 0)
    steps: dict[int, tuple] = {}  # row -> its step scores so far (NaN: not yet), its control

    def advance(t: int, todo: pd.DataFrame) -> dict:
        if not steps:  # round 0's sampled steps, of the rows that race on
            steps.update(_sampled_steps(scored.parts, todo["row_id"].to_numpy()))
        LOG.info(f"racing round {t}: {len(todo)} rows of {todo['prompt_id'].nunique()} prompts")
        estimates, done, failed = _round(run, t, todo, steps, choosing)
        spent = counts(done.chunks, 0)
        stats["race_response_tokens"] += done.tokens
        stats["race_model_tokens"] += spent["model_tokens"]
        stats["race_padded_tokens"] += spent["padded_tokens"]
        stats["race_failed"] += failed
        return estimates

    epsilon, delta = choosing.race_epsilon, choosing.race_delta
    looked, settled_at, per_round = race(
        candidates(df, correct_only), epsilon, delta, race_rounds(fraction), advance
    )
    chosen = race_pick(looked)
    chosen["settled_by"] = [
        "sample" if settled_at[p] == 0 else f"round {settled_at[p]}" for p in chosen["prompt_id"]
    ]
    # a user reads the prompt's candidates, as without racing
    per_prompt = candidates(df, correct_only).groupby("prompt_id").size()
    chosen["n_candidates"] = chosen["prompt_id"].map(per_prompt).to_numpy()
    by = pd.Series(settled_at, dtype=int).value_counts().sort_index()
    stats |= {
        "race_rounds": len(per_round),
        "race_rows_per_round": per_round,
        "race_rescored": int(sum(per_round)),
        "prompts_settled_per_round": {str(int(t)): int(n) for t, n in by.items()},
    }
    return chosen, stats


def in_process(scorer, items: list, scored: list[dict]):
    """Racing's `advance` without Ray: `scorer` (a sampling `Scorer`) scores round t's new
    steps of `items` (row_id = index) in this process; `scored`: round 0's results per row
    (`score_prepared`'s). For benchmarks and tests: the job's rounds are `_round`'s passes."""
    known = {
        r: (np.array(row["step_logprobs"], float), row.get("step_global_logprobs"))
        for r, row in enumerate(scored)
    }

    def advance(t: int, todo: pd.DataFrame) -> dict:
        index = todo["row_id"].tolist()
        out = {}
        for r, got in zip(index, scorer.score_round([items[r] for r in index], t)):
            steps, control = known[r]
            steps[np.asarray(got["round_steps"], int)] = got["round_scores"]
            out[r] = stratified(steps, np.asarray(got["step_strata"], int), control)
        return out

    return advance


def _round(run: Run, t: int, todo: pd.DataFrame, steps: dict, choosing: Choosing):
    """Round `t`'s pass over `todo`'s rows (through the cache's namespace of its results when
    there is a cache: a night rescores only new rows); each row's (LN, se, df) with its steps
    new this round added to `steps`, what the pass did (`Executed`) and its failed rows."""
    rows = {int(f): sorted(r.tolist()) for f, r in todo["row_number"].groupby(todo["file_index"])}
    ident = {
        "round": t,
        "epsilon": choosing.race_epsilon,
        "delta": choosing.race_delta,
        "rows": hashlib.blake2b(
            np.sort(todo["row_id"].to_numpy()).astype("<i8").tobytes(), digest_size=16
        ).hexdigest(),
    }
    pass_ = race_pass(t, rows, ident)
    done = run.execute(pass_)
    got = read_parquet_files(done.parts, ROUND_COLUMNS)
    got = pd.DataFrame(columns=ROUND_COLUMNS) if got is None else got.to_pandas()
    got = got.merge(
        todo[["row_id", "file_index", "content_hash"]], on="row_id", suffixes=("", "_1")
    )
    moved = got["content_hash"] != got["content_hash_1"]
    if moved.any():  # its commits check the files' versions; this, each row's content
        uris = {i: uri for i, uri, _ in run.plan.files}
        names = sorted({redact(uris[int(i)]) for i in got.loc[moved, "file_index"]})
        raise InputChanged(
            f"input files changed since they were scored: {', '.join(names[:5])}; racing "
            "would settle on rows never scored: rerun with a new --run-id (or --overwrite)"
        )
    estimates = {}
    for row in got.itertuples():
        known, control = steps[row.row_id]
        known[np.asarray(row.round_steps, int)] = row.round_scores
        estimates[row.row_id] = stratified(known, np.asarray(row.step_strata, int), control)
    failed = set(todo["row_id"]) - set(estimates)
    if failed:  # its reason is in race/rTT/rejects/; the race takes its estimate as final
        rejects = join(pass_.inside(run.dir).directory, "rejects")
        LOG.warning(
            f"racing round {t} could not score {len(failed)} rows (see "
            f"{rejects}): their prompts are decided on these rows' "
            "last estimates, without racing's guarantee"
        )
        last = todo.set_index("row_id")["local_nat"]
        estimates.update({r: (float(last[r]), 0.0, float("nan")) for r in failed})
    return estimates, done, len(failed)


def _sampled_steps(parts: list[str], row_ids: np.ndarray) -> dict[int, tuple]:
    """Per row of `row_ids`, its step scores in scores/ (round 0's sample; NaN where a step
    was not scored) and the global pass's step means (the estimate's control; None when it
    did not run whole); each part filtered as it is read: memory is that of these rows."""
    wanted = pa.array(row_ids, pa.int64())

    def mine(table: pa.Table) -> pa.Table:
        return table.filter(pc.is_in(table.column("row_id"), value_set=wanted))

    columns = ["row_id", "step_logprobs", "step_global_logprobs"]
    table = read_parquet_files(parts, columns, each=mine).to_pydict()
    # a step not sampled (None) -> NaN
    return {int(r): (np.array(s, float), g) for r, s, g in zip(*(table[c] for c in columns))}
