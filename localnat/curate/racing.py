"""Racing selection in the job (docs/method.md §5.2): under step sampling, a prompt's
choice is made on exact LN wherever the sample cannot make it alone.

    sampled scores -> race: per prompt the candidates whose upper bound reaches the best
      lower bound -> Pass("race"): those rows' unsampled steps (race/) -> exact LN
      (`exact_ln`: sampled steps' sum + the rest's) -> settle: choose on it

Racing runs when `--sample-steps` is set and `--select-by local` (the other signals are
exact already); `--race-z` is its z.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..logs import LOG
from ..redact import redact
from ..scoring.sampling import exact_ln
from .columns import UNSAMPLED_COLUMNS
from .commit import InputChanged, committed_parts, counts
from .config import CurateConfig
from .passes import race_pass
from .run import Executed, Run
from .selection import candidates, race, settle
from .storage import join, read_parquet_files


def racing(cfg: CurateConfig) -> bool:
    return cfg.score.sample_steps is not None and cfg.select_by == "local"


def raced_selection(run: Run, df: pd.DataFrame, chunks: dict) -> tuple[pd.DataFrame, dict]:
    """The racing choice per prompt (`settle`'s columns, `settled_by` set) and counts:
    survivors, rows rescored, rows whose exact pass failed (their sampled LN is kept and
    their prompt says `sample`), the student's response tokens in the exact pass (cache
    hits not counted), prompts settled each way. `chunks`: the scores pass's."""
    cfg = run.cfg
    correct_only = cfg.correct_column is not None
    survivors = race(df, cfg.race_z, correct_only=correct_only)
    todo = survivors.loc[
        survivors["rescore"], ["row_id", "file_index", "row_number", "content_hash"]
    ]
    stats = {"race_survivors": len(survivors), "race_rescored": len(todo), "race_failed": 0}
    stats["race_response_tokens"] = stats["race_model_tokens"] = stats["race_padded_tokens"] = 0
    exact = pd.DataFrame({"row_id": [], "local_nat": []})
    if len(todo):
        exact, done = _exact_pass(run, todo, chunks)
        stats["race_response_tokens"] = done.tokens
        spent = counts(done.chunks, 0)
        stats["race_model_tokens"] = spent["model_tokens"]
        stats["race_padded_tokens"] = spent["padded_tokens"]
    failed = ~todo["row_id"].isin(exact["row_id"])
    if failed.any():
        stats["race_failed"] = int(failed.sum())
        LOG.warning(
            f"racing's exact pass failed for {int(failed.sum())} rows (see "
            f"{join(run.dir, 'race', 'rejects')}): their prompts are settled on the sample"
        )
        lost = survivors["prompt_id"].isin(
            survivors.loc[survivors["row_id"].isin(todo["row_id"][failed]), "prompt_id"]
        )
        survivors.loc[lost, "settled_by"] = "sample"
        survivors.loc[lost & ~survivors["row_id"].isin(exact["row_id"]), "rescore"] = False
    chosen = settle(survivors, exact)
    # settle counts the survivors; a user reads the prompt's candidates, as without racing
    per_prompt = candidates(df, correct_only).groupby("prompt_id").size()
    chosen["n_candidates"] = chosen["prompt_id"].map(per_prompt).to_numpy()
    by = chosen["settled_by"].value_counts()
    stats["prompts_settled_by_sample"] = int(by.get("sample", 0))
    stats["prompts_settled_by_exact"] = int(by.get("exact", 0))
    return chosen, stats


def _exact_pass(run: Run, todo: pd.DataFrame, chunks: dict) -> tuple[pd.DataFrame, Executed]:
    """Pass("race") over `todo`'s rows (through the cache's namespace of its results when
    there is a cache: a night rescores only new survivors); their exact LN (row_id,
    local_nat) and what the pass did (`Executed`)."""
    rows = {int(f): sorted(r.tolist()) for f, r in todo["row_number"].groupby(todo["file_index"])}
    ident = {
        "z": run.cfg.race_z,
        "rows": hashlib.blake2b(
            np.sort(todo["row_id"].to_numpy()).astype("<i8").tobytes(), digest_size=16
        ).hexdigest(),
    }
    pass_ = race_pass(run.dir, rows, ident)
    LOG.info(f"racing: {len(todo)} rows need their unsampled steps scored")
    done = run.execute(pass_)
    parts = [join(pass_.directory, p) for p in committed_parts(done.chunks, "scores/")]
    rest = read_parquet_files(parts, UNSAMPLED_COLUMNS)
    if rest is None:
        return pd.DataFrame({"row_id": [], "local_nat": []}), done
    rest = rest.to_pandas().merge(
        todo[["row_id", "file_index", "content_hash"]], on="row_id", suffixes=("", "_1")
    )
    moved = rest["content_hash"] != rest["content_hash_1"]
    if moved.any():  # its commits check the files' versions; this, each row's content
        uris = {i: uri for i, uri, _ in run.plan.files}
        names = sorted({redact(uris[int(i)]) for i in rest.loc[moved, "file_index"]})
        raise InputChanged(
            f"input files changed since they were scored: {', '.join(names[:5])}; racing "
            "would settle on rows never scored: rerun with a new --run-id (or --overwrite)"
        )
    known = _sampled_sums(run.dir, chunks, rest["row_id"].to_numpy(), set(rows))
    rest = rest.merge(known, on="row_id")
    # every step once: the sampled ones from scores/, the rest from race/ (else a bug)
    whole = rest["known_steps"] + rest["rest_steps"] == rest["n_steps"]
    if not whole.all():
        raise RuntimeError(
            f"racing: steps of rows {rest.loc[~whole, 'row_id'].head(5).tolist()} "
            "are neither sampled nor in the exact pass"
        )
    ln = exact_ln(rest["known_sum"], rest["rest_sum"], rest["n_steps"])
    return pd.DataFrame({"row_id": rest["row_id"], "local_nat": ln}), done


def _sampled_sums(run_dir: str, chunks, row_ids: np.ndarray, files: set) -> pd.DataFrame:
    """Per row of `row_ids` (of input `files`): the sum and number of its scored steps in
    scores/, and n_steps; each part filtered as it is read: memory is that of these rows."""
    wanted = pa.array(row_ids, pa.int64())

    def sums(table: pa.Table) -> pa.Table:
        table = table.filter(pc.is_in(table.column("row_id"), value_set=wanted))
        lists = table.column("step_logprobs").combine_chunks()
        values = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(float)
        parent = pc.list_parent_indices(lists).to_numpy()
        ok = ~np.isnan(values)  # an unscored step is null: NaN here
        n = table.num_rows
        return pa.table(
            {
                "row_id": table.column("row_id"),
                "n_steps": table.column("n_steps"),
                "known_sum": np.bincount(parent[ok], weights=values[ok], minlength=n),
                "known_steps": np.bincount(parent[ok], minlength=n),
            }
        )

    mine = {key: d for key, d in chunks.items() if key[0] in files}
    parts = [join(run_dir, p) for p in committed_parts(mine, "scores/")]
    table = read_parquet_files(parts, ["row_id", "n_steps", "step_logprobs"], each=sums)
    return table.to_pandas()
