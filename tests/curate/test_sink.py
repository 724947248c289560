"""The sink writes a call's rows as one part per chunk; a chunk spread over several calls is
merged into one scores/ and one rejects/ part when it commits."""

import pyarrow as pa
import pyarrow.parquet as pq

from localnat.curate.passes import race_pass
from localnat.curate.sink import Sink, merge_parts


def call(rows: range, rejected: set, call_id: str) -> pa.Table:
    """Rows of chunk (0, 0) as a race-pass call leaves them: identity, results, reasons."""
    n = len(rows)
    return pa.table(
        {
            "row_id": [10 + r for r in rows],
            "source": [f"f.parquet#{r}" for r in rows],
            "file_index": pa.array([0] * n, pa.int32()),
            "row_number": [r for r in rows],
            "prompt_id": ["p"] * n,
            "teacher": ["t"] * n,
            "is_correct": [None] * n,
            "prompt": ["Q?"] * n,
            "response": [f"answer {r}" for r in rows],
            "content_hash": [100 + r for r in rows],
            "reject_reason": ["bad" if r in rejected else None for r in rows],
            "reused": [False] * n,
            "n_response_tokens": [5] * n,
            "rest_sum": [-1.0 * r for r in rows],
            "rest_steps": [2] * n,
            "chunk": pa.array([0] * n, pa.int32()),
            "chunk_rows": [None] * (n - 1) + [9 if rows[-1] == 8 else None],
            "last_chunk": [None] * (n - 1) + [True if rows[-1] == 8 else None],
            "oom_splits": [0] * n,
            "call_id": [call_id] * n,
            "est_tokens": [50] * n,
        }
    )


def test_a_chunk_over_several_calls_commits_one_part_of_each_kind(tmp_path):
    pass_ = race_pass(str(tmp_path), {0: list(range(9))}, {"z": 1})
    sink = Sink(pass_)
    parts = []
    for rows, call_id in ((range(0, 3), "a"), (range(3, 6), "b"), (range(6, 9), "c")):
        counts = sink.write(call(rows, {1, 7}, call_id), "actor").to_pylist()
        parts += [p for c in counts for p in c["parts"]]
    assert len([p for p in parts if p.startswith("scores/")]) == 3
    merged = merge_parts(str(tmp_path / "race"), (0, 0), parts)
    assert sorted(p.split("/")[0] for p in merged) == ["rejects", "scores"]
    scores = pq.read_table(tmp_path / "race" / [p for p in merged if "scores" in p][0])
    rejects = pq.read_table(tmp_path / "race" / [p for p in merged if "rejects" in p][0])
    assert sorted(scores.column("row_id").to_pylist()) == [10 + r for r in (0, 2, 3, 4, 5, 6, 8)]
    assert sorted(rejects.column("row_id").to_pylist()) == [11, 17]
    assert scores.column_names == list(pass_.columns)
    # a chunk in one call keeps its one part as it is
    assert merge_parts(str(tmp_path / "race"), (0, 0), merged) == merged
