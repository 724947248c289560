"""The reduce: a pass's committed scores read back (compact columns), duplicates set apart
(`duplicates.parquet`), and the teacher leaderboard over the rest."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from .columns import REDUCE_COLUMNS
from .config import CurateConfig
from .inputs import InputError
from .leaderboard import leaderboard
from .selection import duplicates
from .storage import join, read_parquet_files, write_table


@dataclass
class Reduced:
    """The scored rows without duplicates, the duplicates (row_id, duplicate_of) and the
    leaderboard."""

    df: pd.DataFrame
    duplicates: pd.DataFrame
    board: dict


def reduce(cfg: CurateConfig, run_dir: str, chunks: dict) -> Reduced:
    """From the scores pass's committed chunks (`chunks`, commit.py)."""
    committed = [join(run_dir, p) for d in chunks.values() for p in d["parts"]]
    scores = read_parquet_files([p for p in committed if "/scores/" in p], REDUCE_COLUMNS)
    if scores is None:
        raise InputError(f"no row could be scored; see {join(run_dir, 'rejects')}")
    df = scores.to_pandas()
    dups = duplicates(df)
    if len(dups):
        table = pa.Table.from_pandas(dups, preserve_index=False)
        write_table(table, join(run_dir, "duplicates.parquet"))
    df = df[~df["row_id"].isin(dups["row_id"])]
    return Reduced(df, dups, leaderboard(df, cfg.seed, min_share=cfg.min_matched_share))
