"""The reduce: the scores pass's committed parts read back, duplicates set apart, the
leaderboard; and what it says of the data on the way."""

import pyarrow as pa
import pyarrow.parquet as pq

from localnat.curate.choose.reduce import reduce
from localnat.curate.job_config import CurateConfig
from localnat.curate.signals import REDUCE_COLUMNS
from localnat.testing.jobs import HAND_ROWS, score_table


def committed(run_dir, df) -> list[str]:
    """`df` as one committed scores/ part of a run directory; its URI."""
    df = df.copy()
    df["file_index"], df["row_number"] = 0, range(len(df))
    df["prompt_key"] = "p-" + df["prompt_id"]
    for name in ("local_nat_se", "local_nat_df", "rank_sum", "surprisal_sum"):
        df[name] = 0.0
    (run_dir / "scores").mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(df[REDUCE_COLUMNS]), run_dir / "scores" / "p.parquet")
    return [str(run_dir / "scores" / "p.parquet")]


def test_a_correctness_column_unknown_everywhere_is_said(tmp_path, said):
    df = score_table(HAND_ROWS)
    df["is_correct"] = None
    parts = committed(tmp_path, df)
    reduced = reduce(CurateConfig(correct_column="ok").choosing, str(tmp_path), parts)
    assert len(reduced.df) == len(HAND_ROWS)
    (line,) = said
    assert "'ok' is unknown (null) on every scored row: no response is selected" in line
    said.clear()
    reduce(CurateConfig().choosing, str(tmp_path), parts)  # no correctness column: nothing to say
    assert not said
