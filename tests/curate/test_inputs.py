"""Input discovery: files, directories, globs, hive partitions, the output left out."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from localnat.curate.inputs.formats import input_columns
from localnat.curate.inputs.plan import hive_columns, list_inputs
from localnat.testing.jobs import sample


def write(path, rows=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": list(range(rows))}), path)


def test_list_inputs_directories_and_globs(tmp_path):
    root = tmp_path / "in"
    for name in ["a.parquet", "b.jsonl", "sub/c.parquet", "teacher=q/d.parquet"]:
        write(root / name)
    for name in ["_SUCCESS", ".hidden.parquet", "_tmp/e.parquet", "meta.json", "notes.txt"]:
        write(root / name)
    found = [u[len(str(root)) + 1 :] for u, _ in list_inputs([str(root)])]
    # a directory: data files at any depth, skipping _ and . names (as Spark and Ray Data do)
    assert found == ["a.parquet", "b.jsonl", "meta.json", "sub/c.parquet", "teacher=q/d.parquet"]
    # a glob matches one level, like a shell, and skips _ and . names too
    star = [u[len(str(root)) + 1 :] for u, _ in list_inputs([f"{root}/*.parquet"])]
    assert star == ["a.parquet"]
    star = [u[len(str(root)) + 1 :] for u, _ in list_inputs([f"{root}/*"])]
    assert star == ["a.parquet", "b.jsonl", "meta.json", "notes.txt"]
    deep = [u[len(str(root)) + 1 :] for u, _ in list_inputs([f"{root}/*/*.parquet"])]
    assert deep == ["sub/c.parquet", "teacher=q/d.parquet"]
    with pytest.raises(FileNotFoundError, match="no input file matches"):
        list_inputs([f"{root}/*.csv"])
    with pytest.raises(FileNotFoundError, match="input not found"):
        list_inputs([str(root / "missing.parquet")])


def test_hive_columns_relative_to_the_root():
    root = "s3://b/corpus"
    uri = f"{root}/teacher=qwq/split=a%20b/part-0.parquet"
    assert hive_columns(uri, root) == {"teacher": "qwq", "split": "a b"}
    assert hive_columns(f"{root}/part-0.parquet", root) == {}
    # a partition-like name above the root is not a column
    assert hive_columns("/x/year=2024/in/f.parquet", "/x/year=2024/in") == {}


def test_outputs_inside_the_input_directory_are_not_read_back(tmp_path):
    pq.write_table(pa.table({"x": [1]}), tmp_path / "a.parquet")
    (tmp_path / "out" / "run1" / "scores").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "out" / "run1" / "scores" / "p.parquet")
    found = [u for u, _ in list_inputs([str(tmp_path)], exclude=str(tmp_path / "out"))]
    assert found == [str(tmp_path / "a.parquet")]


def test_outputs_behind_a_symlink_in_the_input_are_not_read_back(tmp_path):
    """The input holds a symlink to the output, which is given by its real path (or the
    other way round): the previous runs' outputs are still not inputs."""
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"x": [1]}), tmp_path / "in" / "a.parquet")
    (tmp_path / "out" / "run1" / "scores").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "out" / "run1" / "scores" / "p.parquet")
    (tmp_path / "in" / "results").symlink_to(tmp_path / "out", target_is_directory=True)
    every = [u for u, _ in list_inputs([str(tmp_path / "in")])]
    assert str(tmp_path / "in" / "results" / "run1" / "scores" / "p.parquet") in every
    for out in (tmp_path / "out", tmp_path / "in" / "results"):
        found = [u for u, _ in list_inputs([str(tmp_path / "in")], exclude=str(out))]
        assert found == [str(tmp_path / "in" / "a.parquet")], out


def rows_read(uri: str, cfg=None) -> list[dict]:
    """The working rows a run reads from one file (validated, in order)."""
    from localnat.curate.inputs.chunks import read_files
    from localnat.curate.job_config import CurateConfig

    reading = (cfg or CurateConfig()).reading
    pieces = list(read_files([{"file_index": 0, "uri": uri, "root": uri}], reading))
    keep = ["row_number", "prompt_id", "teacher", "prompt", "response", "reject_reason"]
    return pa.concat_tables(pieces).select(keep).to_pylist()


def test_arrow_ipc_files_and_streams_are_read_as_parquet_is(tmp_path):
    import pyarrow.feather as feather

    df = sample(300).head(12)
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, tmp_path / "rows.parquet")
    feather.write_feather(table, tmp_path / "rows.feather", chunksize=5)  # Arrow IPC file
    with pa.OSFile(str(tmp_path / "rows.arrow"), "wb") as sink:  # the stream format
        with pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=5):
                writer.write_batch(batch)
    expected = rows_read(str(tmp_path / "rows.parquet"))
    assert len(expected) == 12 and all(r["reject_reason"] is None for r in expected)
    for name in ("rows.feather", "rows.arrow"):
        assert rows_read(str(tmp_path / name)) == expected, name
        info = input_columns(str(tmp_path / name))
        assert {"prompt", "response", "teacher"} <= set(info.names)
        assert (info.rows, info.exact) == (12, True)


def test_a_datasets_directory_is_read_by_its_arrow_data_not_its_json(tmp_path):
    import datasets

    df = sample(300).head(10)
    datasets.Dataset.from_pandas(df, preserve_index=False).save_to_disk(str(tmp_path / "ds"))
    found = [u.rsplit("/", 1)[-1] for u, _ in list_inputs([str(tmp_path / "ds")])]
    assert found and all(f.startswith("data-") and f.endswith(".arrow") for f in found)
    rows = [r for u, _ in list_inputs([str(tmp_path / "ds")]) for r in rows_read(u)]
    assert [r["response"] for r in rows] == df["response"].tolist()
    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_pandas(df.head(6), preserve_index=False),
            "test": datasets.Dataset.from_pandas(df.tail(4), preserve_index=False),
        }
    )
    splits.save_to_disk(str(tmp_path / "dd"))
    found = [u[len(str(tmp_path / "dd")) + 1 :] for u, _ in list_inputs([str(tmp_path / "dd")])]
    assert sorted(f.split("/")[0] for f in found) == ["test", "train"]
    assert all(f.endswith(".arrow") for f in found)


def test_jsonl_rows_are_counted_or_estimated_for_the_eta(tmp_path):
    import json

    rows = [
        {"prompt": "q" * 40, "response": f"answer {i:06d}", "teacher": "t"} for i in range(60_000)
    ]
    (tmp_path / "big.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "small.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:7]) + "\n")
    info = input_columns(str(tmp_path / "big.jsonl"))
    assert set(info.names) == {"prompt", "response", "teacher"} and not info.exact
    assert abs(info.rows - 60_000) < 0.05 * 60_000  # from the lines per byte read so far
    small = input_columns(str(tmp_path / "small.jsonl"))
    assert (small.rows, small.exact) == (7, True)


def test_the_progress_line_marks_an_estimated_total():
    from localnat.curate.run.progress import Progress

    progress = Progress(1, 1000, print, exact=False)
    progress.add(10, 0, 100)
    line = progress.line()
    assert "rows 10/~1,000" in line and "ETA ~" in line


def test_small_files_are_grouped_in_order_and_large_ones_stand_alone():
    from localnat.curate.inputs.plan import GROUP_BYTES, GROUP_FILES, SMALL_FILE, file_groups

    small = SMALL_FILE // 4
    sizes = [small] * 3 + [SMALL_FILE] + [None] + [small] * (GROUP_FILES + 5)
    groups = file_groups(sizes)
    assert [(g.start, g.stop) for g in groups[:3]] == [(0, 3), (3, 4), (4, 5)]
    covered = [i for g in groups for i in range(g.start, g.stop)]
    assert covered == list(range(len(sizes)))  # every file once, in order
    for g in groups:
        held = sizes[g]
        assert len(held) == 1 or (
            all(s is not None and s < SMALL_FILE for s in held)
            and sum(held) <= GROUP_BYTES
            and len(held) <= GROUP_FILES
        )
    by_bytes = file_groups([SMALL_FILE - 1] * 100)  # bytes close a group before its count
    assert max(g.stop - g.start for g in by_bytes) == GROUP_BYTES // (SMALL_FILE - 1)
    assert file_groups([]) == []


def test_a_correctness_column_that_is_not_one_stops_the_run_before_any_work(tmp_path):
    """correct/wrong labels where true/false belongs once rejected every row after Ray had
    started: refused at planning, naming the file and a value; a stray value among booleans
    is its row's reject, not the run's."""
    import pytest

    from localnat.curate.inputs.plan import InputError, plan
    from localnat.curate.job_config import CurateConfig

    rows = [{"prompt": "Q?", "response": f"A{i}.", "teacher": "t"} for i in range(6)]
    labels = ["correct", "wrong", "correct", "wrong", "yes", "no"]
    pq.write_table(
        pa.Table.from_pylist([dict(r, ok=v) for r, v in zip(rows, labels)]), tmp_path / "a.parquet"
    )
    cfg = CurateConfig(inputs=(str(tmp_path / "a.parquet"),), correct_column="ok")
    with pytest.raises(
        InputError, match="a.parquet: --correct-column 'ok' is not a corr.*'correct'"
    ):
        plan(cfg.inputs, cfg.reading, str(tmp_path / "out"))
    labels = ["yes", "no", "true", "maybe", "1", "0"]
    pq.write_table(
        pa.Table.from_pylist([dict(r, ok=v) for r, v in zip(rows, labels)]), tmp_path / "a.parquet"
    )
    assert len(plan(cfg.inputs, cfg.reading, str(tmp_path / "out")).files) == 1
