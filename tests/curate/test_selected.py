"""selected/ keeps every input column, whatever its values."""


def test_selected_rows_keep_every_column_and_survive_surrogates():
    from localnat.curate.selected import _table

    table, as_text = _table([{"a": 1}, {"a": 2, "answer": "x"}, {"a": 3, "s": "bad\udc80"}])
    assert table.column_names == ["a", "answer", "s"]  # not only the first record's keys
    assert table.column("answer").to_pylist() == [None, "x", None]
    assert table.column("s").to_pylist()[2] == "bad\\udc80" and as_text == []
    table, as_text = _table([{"v": 1}, {"v": "one"}])
    assert table.column("v").to_pylist() == ["1", "one"] and as_text == ["v"]
