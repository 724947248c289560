"""Reading a file into commit chunks: order, truncated files, storage errors against bad content."""

import gzip
import json
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from localnat.curate.inputs.chunks import read_files
from localnat.curate.job_config import CurateConfig
from localnat.testing.jobs import sample


def chunks_of(table_iter):
    rows = []
    for t in table_iter:
        rows += t.select(["chunk", "chunk_rows", "last_chunk", "reject_reason"]).to_pylist()
    return rows


def test_rows_are_grouped_into_commit_chunks_in_file_order(tmp_path):
    df = sample(300)
    for n, expect in ((7, [3, 3, 1]), (6, [3, 3])):
        path = tmp_path / f"f{n}.parquet"
        pq.write_table(pa.Table.from_pandas(df.head(n), preserve_index=False), path)
        cfg = CurateConfig(commit_rows=3)
        item = pa.table(
            {
                "file_index": [0],
                "uri": [str(path)],
                "root": [str(tmp_path)],
                "skip": pa.array([[]], pa.list_(pa.int64())),
            }
        )
        rows = chunks_of(read_files(item.to_pylist(), cfg.reading))
        assert [r["chunk"] for r in rows] == [i // 3 for i in range(n)]
        ends = [(r["chunk"], r["chunk_rows"], r["last_chunk"]) for r in rows if r["chunk_rows"]]
        assert ends == [(c, k, c == len(expect) - 1) for c, k in enumerate(expect)]
        # chunks committed earlier are read past, not emitted
        item = item.set_column(3, "skip", pa.array([[0, len(expect) - 1]], pa.list_(pa.int64())))
        skipped = [1, 1, 1] if n == 7 else []
        assert [r["chunk"] for r in chunks_of(read_files(item.to_pylist(), cfg.reading))] == skipped


def test_a_truncated_gzip_keeps_the_rows_it_could_read(tmp_path):
    df = sample(200).head(6)
    lines = "\n".join(json.dumps(r) for r in df.to_dict("records")).encode()
    data = gzip.compress(lines)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: int(len(data) * 0.8)])
    item = pa.table(
        {
            "file_index": [0],
            "uri": [str(path)],
            "root": [str(tmp_path)],
            "skip": pa.array([[]], pa.list_(pa.int64())),
        }
    )
    graded = CurateConfig(correct_column="is_correct").reading
    rows = chunks_of(read_files(item.to_pylist(), graded))
    read = [r for r in rows if r["reject_reason"] is None]
    assert 1 <= len(read) < len(df)
    assert rows[-1]["reject_reason"].startswith(f"unreadable file: rows from {len(read)} on")
    assert rows[-1]["last_chunk"] is True and rows[-1]["chunk_rows"] == len(read) + 1


def test_a_storage_error_fails_the_read_and_a_corrupt_file_is_a_reject(tmp_path, monkeypatch):
    import localnat.curate.inputs.chunks as chunks

    def rows_then(err):
        def read_rows(uri, fmt, cols, n, only=None):
            yield [(0, {"prompt": "p?", "response": "r.", "teacher": "t"})]
            raise err

        return read_rows

    item = pa.table(
        {
            "file_index": [0],
            "uri": ["x.jsonl"],
            "root": ["."],
            "skip": pa.array([[]], pa.list_(pa.int64())),
        }
    )
    monkeypatch.setattr(chunks, "read_rows", rows_then(OSError("connection reset")))
    with pytest.raises(OSError, match="connection reset"):  # retried/resumed, never committed
        list(read_files(item.to_pylist(), CurateConfig().reading))
    monkeypatch.setattr(chunks, "read_rows", rows_then(EOFError("gzip ends early")))
    rows = chunks_of(read_files(item.to_pylist(), CurateConfig().reading))
    assert rows[0]["reject_reason"] is None
    assert rows[1]["reject_reason"].startswith("unreadable file: rows from 1 on not read")


def test_only_reads_just_the_rows_asked_for_in_every_format(tmp_path):
    """`read_rows(only=...)` equals reading every row and keeping those indices: row numbers
    count blank and broken JSONL lines, Arrow files are sliced into chunks as Parquet is."""
    import pyarrow.feather as feather

    from localnat.curate.inputs.formats import read_rows

    rows = pa.Table.from_pandas(sample(200), preserve_index=False).to_pylist()
    table = pa.Table.from_pylist([{**r, "n": i} for i in range(30) for r in rows])  # 600 rows
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=100)
    feather.write_feather(table, tmp_path / "a.arrow", chunksize=170)
    lines = [json.dumps(r) for r in table.slice(0, 40).to_pylist()]
    lines[3], lines[7], lines[11] = "", "{not json", '"a string"'
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    picks = [set(), {0}, {5, 599}, set(range(0, 600, 7)), {1, 3, 7, 11, 39}, set(range(600))]
    for name in ("a.parquet", "a.arrow", "a.jsonl"):
        uri = str(tmp_path / name)
        every = [r for chunk in read_rows(uri, "auto", None, 64) for r in chunk]
        numbers = [i for i in range(40) if i != 3] if name == "a.jsonl" else list(range(600))
        assert [i for i, _ in every] == numbers  # a blank line is no row, but counts
        for only in picks:
            chunks = list(read_rows(uri, "auto", None, 64, only=only))
            assert all(0 < len(c) <= 64 for c in chunks)
            assert [r for c in chunks for r in c] == [r for r in every if r[0] in only]


def test_files_are_read_by_their_bytes_not_their_names(tmp_path):
    """gzip named .jsonl, one JSON array named .json, Feather v1: read as what they are; an
    Arrow stream cut short keeps its rows before the cut and rejects the rest, as a
    truncated gzip does (a storage error would be retried forever)."""
    import pyarrow.feather as feather

    from localnat.curate.inputs.formats import read_rows

    records = [{"prompt": f"Q{i}?", "response": f"A {i}.", "teacher": "t"} for i in range(300)]
    text = "\n".join(json.dumps(r) for r in records)
    (tmp_path / "zipped.jsonl").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "array.json").write_text(" \n" + json.dumps(records, indent=1))
    table = pa.Table.from_pylist(records)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        feather.write_feather(table, tmp_path / "v1.feather", version=1)
    for name in ("zipped.jsonl", "array.json", "v1.feather"):
        got = [r for c in read_rows(str(tmp_path / name), "auto", None, 64) for r in c]
        assert got == list(enumerate(records)), name
        assert [r for r, _ in rows_of(tmp_path / name, only={7, 299})] == [7, 299], name

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=100):
            writer.write_batch(batch)
    whole = sink.getvalue().to_pybytes()
    (tmp_path / "cut.arrow").write_bytes(whole[: len(whole) * 2 // 3])
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(text.encode())[:1500])
    for name in ("cut.arrow", "cut.jsonl.gz"):
        uri = str(tmp_path / name)
        whole = [{"file_index": 0, "uri": uri, "root": uri}]
        rows = chunks_of(read_files(whole, CurateConfig().reading))
        ok = [r for r in rows if r["reject_reason"] is None]
        assert 0 < len(ok) < 300 and len(rows) == len(ok) + 1, name
        reason = rows[-1]["reject_reason"]
        assert reason.startswith(f"unreadable file: rows from {len(ok)} on"), name
        # selected/ re-reads rows it scored: those before the cut read without an error
        assert [r for r, _ in rows_of(tmp_path / name, only={0, len(ok) - 1})] == [0, len(ok) - 1]


def rows_of(path, only):
    from localnat.curate.inputs.formats import read_rows

    return [r for c in read_rows(str(path), "auto", None, 64, only=only) for r in c]
