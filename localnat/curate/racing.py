"""Racing selection in the job (docs/method.md §5.2): under step sampling, a prompt's
choice is made on exact LN wherever the sample cannot make it alone.

    sampled scores -> race: per prompt the candidates whose upper bound reaches the best
      lower bound -> the exact pass: survivors' rows read back by `source`, only the steps
      their samples left out scored (race/, committed and resumed like scores/) -> exact LN
      = (sampled steps' sum + the rest's sum) / steps -> settle: choose on it

Racing runs when `--sample-steps` is set and `--select-by local` (the other signals are
exact already); `--race-z` is its z.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..logs import LOG
from .cache import open_namespace
from .columns import UNSAMPLED_COLUMNS, UNSAMPLED_RESULTS
from .commit import committed_chunks, completed_files, remove_uncommitted
from .config import CurateConfig
from .selection import candidates, race, settle
from .storage import delete, join, list_files, read_parquet_files, read_text, write_text

RACE_DIR = "race"


def racing(cfg: CurateConfig) -> bool:
    return cfg.score.sample_steps is not None and cfg.select_by == "local"


def raced_selection(files, df: pd.DataFrame, cfg: CurateConfig, run_dir: str, chunks, student):
    """The racing choice per prompt (`settle`'s columns, `settled_by` set) and counts:
    survivors, rows rescored, rows whose exact pass failed (their sampled LN is kept and
    their prompt says `sample`), the student's response tokens in the exact pass (cache
    hits not counted), prompts settled each way. `student`: its identity, for the cache."""
    correct_only = cfg.correct_column is not None
    survivors = race(df, cfg.race_z, correct_only=correct_only)
    todo = survivors.loc[survivors["rescore"], ["row_id", "file_index", "source", "content_hash"]]
    stats = {"race_survivors": len(survivors), "race_rescored": len(todo), "race_failed": 0}
    stats["race_response_tokens"] = 0
    exact = pd.DataFrame({"row_id": [], "local_nat": []})
    if len(todo):
        exact, stats["race_response_tokens"] = _exact_pass(
            files, todo, cfg, run_dir, chunks, student
        )
    failed = ~todo["row_id"].isin(exact["row_id"])
    if failed.any():
        stats["race_failed"] = int(failed.sum())
        LOG.warning(
            f"racing's exact pass failed for {int(failed.sum())} rows (see "
            f"{join(run_dir, RACE_DIR, 'rejects')}): their prompts are settled on the sample"
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


def _exact_pass(files, todo: pd.DataFrame, cfg, run_dir: str, chunks, student):
    """Score the unsampled steps of `todo`'s rows (a Ray pass like the first, into race/,
    through the score cache's namespace of these results when there is a cache: a night
    rescores only new survivors); returns their exact LN (row_id, local_nat) and the
    response tokens this attempt scored."""
    from .job import stream  # the job's own streaming and commit loop

    race_dir = join(run_dir, RACE_DIR)
    where = todo["source"].str.rsplit("#", n=1).str[1].astype("int64")
    rows = {int(f): sorted(r.tolist()) for f, r in where.groupby(todo["file_index"])}
    _start_or_resume(race_dir, cfg.race_z, todo["row_id"])
    done = committed_chunks(race_dir)
    remove_uncommitted(race_dir, done)
    skip: dict[int, list[int]] = {}
    for f, c in done:
        skip.setdefault(f, []).append(c)
    finished = completed_files(done)
    pending = [f for f in files if f[0] in rows and f[0] not in finished]
    tokens = 0
    if pending:
        todo_files = {i for i, _, _ in pending}
        n = sum(len(rows[i]) for i in todo_files)
        n -= sum(c["scored"] + c["rejected"] for (f, _), c in done.items() if f in todo_files)
        LOG.info(f"racing: {len(todo)} rows need their unsampled steps scored ({n} to do)")
        cache = None
        if cfg.cache:
            cache = open_namespace(cfg, student, columns=UNSAMPLED_RESULTS)
        tokens, _ = stream(pending, cfg, race_dir, skip, max(n, 0) or None, cache, only=rows)
    done = committed_chunks(race_dir)
    parts = [join(race_dir, p) for d in done.values() for p in d["parts"]]
    rest = read_parquet_files([p for p in parts if "/scores/" in p], UNSAMPLED_COLUMNS)
    if rest is None:
        return pd.DataFrame({"row_id": [], "local_nat": []}), tokens
    rest = rest.to_pandas().merge(
        todo[["row_id", "content_hash"]], on="row_id", suffixes=("", "_1")
    )
    rest = rest[rest["content_hash"] == rest["content_hash_1"]]  # an input edited meanwhile: failed
    known = _sampled_sums(run_dir, chunks, rest["row_id"].to_numpy(), set(rows))
    rest = rest.merge(known, on="row_id")
    # every step once: the sampled ones from scores/, the rest from race/ (else a bug)
    whole = rest["known_steps"] + rest["rest_steps"] == rest["n_steps"]
    if not whole.all():
        raise RuntimeError(
            f"racing: steps of rows {rest.loc[~whole, 'row_id'].head(5).tolist()} "
            "are neither sampled nor in the exact pass"
        )
    exact = (rest["known_sum"] + rest["rest_sum"]) / rest["n_steps"]
    return pd.DataFrame({"row_id": rest["row_id"], "local_nat": exact}), tokens


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

    parts = [
        join(run_dir, p)
        for (f, _), d in chunks.items()
        if f in files
        for p in d["parts"]
        if p.startswith("scores/")
    ]
    table = read_parquet_files(parts, ["row_id", "n_steps", "step_logprobs"], each=sums)
    return table.to_pandas()


def _start_or_resume(race_dir: str, z: float, row_ids: pd.Series) -> None:
    """race/ resumes only the pass it started (the same rows and z); another one (a rerun
    with another --race-z) starts again: race/ is this run's own."""
    ident = {
        "z": z,
        "rows": hashlib.blake2b(
            np.sort(row_ids.to_numpy()).astype("<i8").tobytes(), digest_size=16
        ).hexdigest(),
    }
    marker = join(race_dir, "_race.json")
    text = read_text(marker)
    if text is not None and json.loads(text) == ident:
        return
    for uri in list_files(race_dir):
        delete(uri)
    write_text(marker, json.dumps(ident))
