"""The sink writes a call's rows: the chunks whole in the call share one part of each kind,
a chunk spread over several calls is merged into one scores/ and one rejects/ part when it
commits."""

import pyarrow as pa
import pyarrow.parquet as pq

from localnat.curate.run.outputs import (
    commit_chunk,
    committed_chunks,
    committed_parts,
    merge_parts,
    remove_uncommitted,
)
from localnat.curate.run.passes import race_pass
from localnat.curate.run.sink import CALL_COSTS, Sink, shared_parts


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
            "round_steps": [[r] for r in rows],
            "round_scores": [[-1.0 * r] for r in rows],
            "step_strata": [[-1, 0] for _ in rows],
            "chunk": pa.array([0] * n, pa.int32()),
            "chunk_rows": [None] * (n - 1) + [9 if rows[-1] == 8 else None],
            "last_chunk": [None] * (n - 1) + [True if rows[-1] == 8 else None],
            **{name: [0] * n for name in CALL_COSTS},
            "call_id": [call_id] * n,
            "est_tokens": [50] * n,
        }
    )


def test_a_chunk_over_several_calls_commits_one_part_of_each_kind(tmp_path):
    pass_ = race_pass(1, {0: list(range(9))}, {"z": 1}).inside(str(tmp_path))
    sink = Sink(pass_)
    parts = []
    for rows, call_id in ((range(0, 3), "a"), (range(3, 6), "b"), (range(6, 9), "c")):
        counts = sink.write(call(rows, {1, 7}, call_id), "actor").to_pylist()
        parts += [p for c in counts for p in c["parts"]]
    assert len([p for p in parts if p.startswith("scores/")]) == 3
    merged = merge_parts(str(tmp_path / "race" / "r01"), (0, 0), parts)
    assert sorted(p.split("/")[0] for p in merged) == ["rejects", "scores"]
    scores = pq.read_table(tmp_path / "race" / "r01" / [p for p in merged if "scores" in p][0])
    rejects = pq.read_table(tmp_path / "race" / "r01" / [p for p in merged if "rejects" in p][0])
    assert sorted(scores.column("row_id").to_pylist()) == [10 + r for r in (0, 2, 3, 4, 5, 6, 8)]
    assert sorted(rejects.column("row_id").to_pylist()) == [11, 17]
    assert scores.column_names == list(pass_.columns)
    # a chunk in one call keeps its one part as it is
    assert merge_parts(str(tmp_path / "race" / "r01"), (0, 0), merged) == merged


def test_a_call_of_many_small_chunks_writes_each_its_own_rows(tmp_path):
    """A call of many one-file pieces, interleaved, one Arrow chunk each (as a call of small
    files arrives): every (file, chunk) gets exactly its rows, in call order, and its counts."""
    pass_ = race_pass(1, {f: list(range(9)) for f in range(4)}, {"z": 1}).inside(str(tmp_path))
    pieces, expect = [], {}
    for k in range(24):
        f, c = k % 4, (k // 4) % 2  # files 0-3, chunks 0-1, in turn
        piece = call(range(k, k + 1), {5, 11} & {k}, "x")
        piece = piece.set_column(2, "file_index", pa.array([f], pa.int32()))
        at = piece.schema.get_field_index("chunk")
        piece = piece.set_column(at, "chunk", pa.array([c], pa.int32()))
        pieces.append(piece)
        expect.setdefault((f, c), []).append(10 + k)
    table = pa.concat_tables(pieces, promote_options="permissive")
    assert table.column("row_id").num_chunks == 24
    counts = Sink(pass_).write(table, "actor").to_pylist()
    assert [(c["file_index"], c["chunk"]) for c in counts] == sorted(expect)
    for c in counts:
        rows = []
        for part in c["parts"]:
            rows += pq.read_table(tmp_path / "race" / "r01" / part).column("row_id").to_pylist()
        rejected = [r for r in expect[(c["file_index"], c["chunk"])] if r in (15, 21)]
        assert sorted(rows) == expect[(c["file_index"], c["chunk"])]
        assert (c["scored"], c["rejected"]) == (len(rows) - len(rejected), len(rejected))
        scored = [p for p in c["parts"] if p.startswith("scores/")]
        order = pq.read_table(tmp_path / "race" / "r01" / scored[0]).column("row_id").to_pylist()
        assert order == sorted(order)  # call order kept within a chunk
        assert c["call_rows"] == 24 and c["call_id"] == "x"


def test_whole_chunks_of_a_call_share_a_part_that_counts_only_once_all_are_committed(tmp_path):
    """24 one-row files in one call: one scores/ and one rejects/ part for all; every marker
    says how many markers list each part. A group cut short (a marker missing, as after a
    kill between markers) is not committed at all: its markers go, then its parts, and the
    chunks are redone; never a row twice, never a row without its marker."""
    pass_ = race_pass(1, {f: [0] for f in range(24)}, {"z": 1}).inside(str(tmp_path))
    pieces = []
    for k in range(24):
        piece = call(range(8, 9), {8} if k in (5, 11) else set(), "x")  # each its chunk's end
        piece = piece.set_column(2, "file_index", pa.array([k], pa.int32()))
        piece = piece.set_column(0, "row_id", pa.array([10 + k], pa.int64()))
        at = piece.schema.get_field_index("chunk_rows")
        piece = piece.set_column(at, "chunk_rows", pa.array([1], pa.int64()))
        pieces.append(piece)
    table = pa.concat_tables(pieces, promote_options="permissive")
    counts = Sink(pass_).write(table, "actor").to_pylist()
    directory = tmp_path / "race" / "r01"
    scores, rejects = (sorted((directory / d).iterdir()) for d in ("scores", "rejects"))
    assert len(scores) == len(rejects) == 1
    assert pq.read_table(scores[0]).num_rows == 22 and pq.read_table(rejects[0]).num_rows == 2
    for c in counts:
        assert len(c["parts"]) == 1 and c["scored"] + c["rejected"] == c["chunk_rows"] == 1
        assert shared_parts(c) == {c["parts"][0]: 2 if c["rejected"] else 22}

    def commit_all():
        for c in counts:
            shared = shared_parts(c)
            record = {k: c[k] for k in ("scored", "rejected", "parts", "last")}
            commit_chunk(
                str(directory), c["file_index"], c["chunk"], "u", record | {"shared": shared}
            )

    commit_all()
    chunks = committed_chunks(str(directory))
    assert len(chunks) == 24 and committed_parts(chunks, "scores/") == [f"scores/{scores[0].name}"]
    (directory / "_done" / "f000003-c000000.json").unlink()  # one of the 22 is missing
    chunks = committed_chunks(str(directory), clean=False)  # a reader: the 22 do not count
    assert sorted(f for f, _ in chunks) == [5, 11]
    chunks = committed_chunks(str(directory))  # under the lease: their markers go
    remove_uncommitted(str(directory), chunks)
    assert not scores[0].exists()
    assert len(list((directory / "_done").iterdir())) == 2 and rejects[0].exists()
