"""selected/ keeps every input column, whatever its values."""


def test_selected_rows_keep_every_column_and_survive_surrogates():
    from localnat.curate.choose.dataset import _table

    table, as_text = _table([{"a": 1}, {"a": 2, "answer": "x"}, {"a": 3, "s": "bad\udc80"}])
    assert table.column_names == ["a", "answer", "s"]  # not only the first record's keys
    assert table.column("answer").to_pylist() == [None, "x", None]
    assert table.column("s").to_pylist()[2] == "bad\\udc80" and as_text == []
    table, as_text = _table([{"v": 1}, {"v": "one"}])
    assert table.column("v").to_pylist() == ["1", "one"] and as_text == ["v"]


def test_a_row_read_back_must_be_the_row_scored(tmp_path):
    """selected/ reads chosen rows back by number: a row whose text changed, or that is
    gone, stops the run naming the file, never selecting text that was not scored."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pytest

    from localnat.curate.choose.dataset import selected_records
    from localnat.curate.inputs.records import content
    from localnat.curate.job_config import CurateConfig
    from localnat.curate.run.resume import InputChanged
    from localnat.curate.signals import SELECTED_COLUMNS

    cfg = CurateConfig()
    rows = [
        {"prompt": f"Q{i}?", "response": f"A {i}.", "teacher": "t", "prompt_id": i}
        for i in range(4)
    ]
    uri = str(tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pylist(rows), uri)
    scored = [content(rows[i], {}, cfg.reading) for i in (1, 3)]
    chosen = pa.Table.from_pylist(
        [
            {"_row": i, "_content": c, "_prompt": p, "prompt_id": str(i)}
            | {name: i for name in SELECTED_COLUMNS}
            for i, (c, p) in zip((1, 3), scored)
        ]
    )
    records, _ = selected_records(uri, uri, chosen, cfg.reading, cfg.score.system_prompt)
    assert [r["response"] for r in records] == ["A 1.", "A 3."]
    rows[3]["response"] = "A different answer."
    pq.write_table(pa.Table.from_pylist(rows), uri)
    with pytest.raises(InputChanged, match="a.parquet changed .*row 3 is not the row it scored"):
        selected_records(uri, uri, chosen, cfg.reading, cfg.score.system_prompt)
    pq.write_table(pa.Table.from_pylist(rows[:2]), uri)
    with pytest.raises(InputChanged, match="1 rows it scored are gone"):
        selected_records(uri, uri, chosen, cfg.reading, cfg.score.system_prompt)


def test_a_selected_row_is_also_its_conversation_verbatim(tmp_path):
    """`messages`: [system,] user, assistant, each the text scored, verbatim; an input column
    named `messages` is kept, renamed."""
    from dataclasses import replace

    import pyarrow as pa
    import pyarrow.parquet as pq

    from localnat.curate.choose.dataset import selected_records
    from localnat.curate.inputs.records import content
    from localnat.curate.job_config import CurateConfig
    from localnat.curate.signals import SELECTED_COLUMNS

    row = {"prompt": " Q?\n", "response": "Step 1.\n\nSo 4. ", "teacher": "t", "prompt_id": 0}
    row["messages"] = "theirs"
    uri = str(tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pylist([row]), uri)
    cfg = CurateConfig()
    c, p = content(row, {}, cfg.reading)
    chosen = pa.Table.from_pylist(
        [{"_row": 0, "_content": c, "_prompt": p} | {name: 0 for name in SELECTED_COLUMNS}]
    )
    (rec,), renamed = selected_records(uri, uri, chosen, cfg.reading, cfg.score.system_prompt)
    assert rec["messages"] == [
        {"role": "user", "content": " Q?\n"},
        {"role": "assistant", "content": "Step 1.\n\nSo 4. "},
    ]
    assert rec["input_messages"] == "theirs" and renamed == {"messages": "input_messages"}
    cfg = replace(cfg, score=replace(cfg.score, system_prompt="Think step by step."))
    (rec,), _ = selected_records(uri, uri, chosen, cfg.reading, cfg.score.system_prompt)
    assert rec["messages"][0] == {"role": "system", "content": "Think step by step."}
    assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant"]


def test_a_node_that_does_not_see_the_run_directory_writes_no_part(ray_local, tmp_path):
    """selected/'s tasks run after the passes checked every node: a node that joined since
    (an autoscaler's) and reads another disk stops the run before writing a part there."""
    import json

    import pytest

    from localnat.curate.choose.dataset import _in_tasks
    from localnat.curate.run.nodes import NotShared

    def _parts(batch, _cfg):  # pickled by value: workers do not import the tests
        return [f"part of {job}" for job in batch]

    lease = tmp_path / "_lease" / "o1.json"
    lease.parent.mkdir()
    lease.write_text(json.dumps({"owner": "o1"}))
    seen = {"output": (str(lease), "o1")}
    assert _in_tasks(_parts, ["a", "b"], None, seen) == ["part of a", "part of b"]
    blind = {"output": (str(tmp_path / "elsewhere" / "_lease" / "o1.json"), "o1")}
    with pytest.raises(NotShared, match=r"does not see --output: .*elsewhere.*s3://"):
        _in_tasks(_parts, ["a"], None, blind)
    with pytest.raises(NotShared):  # another run's lease there: not this directory
        _in_tasks(_parts, ["a"], None, {"output": (str(lease), "o2")})


def test_a_part_conformed_to_another_schema_is_stale_not_cast_again(tmp_path):
    """A resumed part may have been brought to a former run's common schema (an int column
    made text): casting it again could not give back its ints, so it is written anew."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from localnat.curate.choose.dataset import _conform_parts, common_schema, conformed

    (tmp_path / "selected").mkdir()
    ints, texts = pa.table({"v": [1, 2]}), pa.table({"v": ["x"]})
    target, as_text = common_schema([ints.schema, texts.schema])
    assert as_text == ["v"] and target.field("v").type == pa.string()
    pq.write_table(ints, tmp_path / "selected" / "f000000.parquet")
    assert _conform_parts([("f000000.parquet", ints.schema, target)], str(tmp_path)) == []
    back = pq.read_table(tmp_path / "selected" / "f000000.parquet")
    assert back.equals(conformed(ints, target)) and back.column("v").to_pylist() == ["1", "2"]
    jobs = [("f000000.parquet", ints.schema, target)]
    assert _conform_parts(jobs, str(tmp_path)) == []  # in the common schema: left as it is
    assert _conform_parts([("f000000.parquet", ints.schema, ints.schema)], str(tmp_path)) == [
        "f000000.parquet"
    ]


def test_a_part_is_identified_by_the_bytes_of_the_code_that_writes_it(tmp_path, monkeypatch):
    """An edit to any module that turns chosen rows into a part (reading them back, making
    the records, writing them) changes every part's digest, version number or not: a resume
    after it writes the parts again instead of keeping what the old code wrote."""
    from pathlib import Path

    import pyarrow as pa

    from localnat.curate.choose import dataset
    from localnat.curate.inputs import records

    rows = pa.table({"_row": [1], "_content": [7], "_prompt": [8], "row_id": [3]})
    group = [(0, str(tmp_path / "a.parquet"), str(tmp_path), rows)]
    before, code = dataset._digest(group, ("s",)), dataset.code()
    assert dataset._digest(group, ("s",)) == before  # the same code and rows: the same part

    edited = Path(records.__file__).resolve()

    class Edited(type(Path())):
        def read_bytes(self):
            data = super().read_bytes()
            return data + b"\n# edited" if self.resolve() == edited else data

    monkeypatch.setattr(dataset, "Path", Edited)
    dataset.code.cache_clear()
    try:
        assert dataset.code() != code
        assert dataset._digest(group, ("s",)) != before
    finally:
        dataset.code.cache_clear()
