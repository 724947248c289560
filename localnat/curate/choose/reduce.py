"""The reduce: a pass's committed scores read back (compact columns), duplicates set apart
(`duplicates.parquet`), and the teacher leaderboard over the rest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...logs import LOG
from ..inputs.plan import InputError
from ..settings import Choosing
from ..signals import REDUCE_COLUMNS
from ..storage import join, read_parquet_files
from .leaderboard import leaderboard
from .selection import duplicates
from .validation import validation


@dataclass
class Reduced:
    """The scored rows without duplicates (`prompt_key` as codes into `prompt_keys`, the
    prompt texts' hashes), the duplicates (row_id, duplicate_of), the leaderboard (with
    `validation`) and the prompt ids that held two prompt texts."""

    df: pd.DataFrame
    duplicates: pd.DataFrame
    board: dict
    prompt_id_conflicts: int = 0
    prompt_keys: np.ndarray | None = None


def reduce(
    choosing: Choosing, run_dir: str, parts: list[str], family: str | None = None
) -> Reduced:
    """From a pass's committed scores/ parts (`Executed.parts`); `family`: the student's
    model family, for the same-family flag."""
    scores = read_parquet_files(parts, REDUCE_COLUMNS)
    if scores is None:
        raise InputError(f"no row could be scored; see {join(run_dir, 'rejects')}")
    # column by column, each Arrow column freed once converted: the table is not held twice
    df = scores.to_pandas(split_blocks=True, self_destruct=True)
    del scores
    conflicts = split_conflicts(df)
    # the prompt texts' hashes only tell prompts apart from here on: codes, not strings
    codes, keys = pd.factorize(df["prompt_key"])
    df["prompt_key"] = codes.astype("int32")
    dups = duplicates(df)
    if len(dups):
        df = df[~df["row_id"].isin(dups["row_id"])]
    board = leaderboard(
        df,
        seed=choosing.seed,
        min_share=choosing.min_matched_share,
        family=family,
        signals=choosing.signals,
    )
    if choosing.correct_column:
        board["validation"] = validation(df, board, choosing.seed)
        if df["is_correct"].isna().all():
            LOG.warning(
                f"--correct-column {choosing.correct_column!r} is unknown (null) on every scored "
                "row: no response is selected (only correct ones are); leave the option out to "
                "select among all responses"
            )
    return Reduced(df, dups, board, conflicts, np.asarray(keys, dtype=object))


def split_conflicts(df: pd.DataFrame) -> int:
    """A prompt_id that holds two prompt texts is two prompts: each text's rows get the id
    `<prompt_id>~<8 hex of the text's hash>`, so they never compete in one selection or one
    leaderboard row. Returns how many prompt ids were split (one warning)."""
    texts = df.groupby("prompt_id")["prompt_key"].nunique()
    split = texts.index[texts > 1]
    if len(split):
        rows = df["prompt_id"].isin(split)
        df.loc[rows, "prompt_id"] = (
            df.loc[rows, "prompt_id"] + "~" + df.loc[rows, "prompt_key"].str[2:10]
        )
        LOG.warning(
            f"{len(split)} prompt ids hold more than one prompt text (e.g. {split[0]!r}): "
            "each text is its own prompt here; give distinct prompt ids"
        )
    return len(split)
