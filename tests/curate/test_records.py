"""Input rows validated: prompt ids and correctness values are read, never guessed."""

import pytest

from localnat.curate.inputs.records import normalize
from localnat.curate.job_config import CurateConfig


def test_missing_or_nan_prompt_ids_fall_back_to_the_prompt_hash():
    cfg = CurateConfig()
    rows = [
        (0, {"prompt": "A?", "response": "x.", "teacher": "t", "prompt_id": float("nan")}),
        (1, {"prompt": "B?", "response": "y.", "teacher": "t", "prompt_id": float("nan")}),
        (2, {"prompt": "A?", "response": "z.", "teacher": "u", "prompt_id": None}),
        (3, {"prompt": "B?", "response": "w.", "teacher": "u", "prompt_id": " "}),
        (4, {"prompt": "C?", "response": "v.", "teacher": "u", "prompt_id": 7}),
    ]
    ids = normalize(rows, "f.jsonl", 0, {}, cfg.reading).column("prompt_id").to_pylist()
    assert ids[0] == ids[2] != ids[1] == ids[3] and ids[4] == "7"
    assert all(i.startswith("p-") for i in ids[:4]) and "nan" not in ids


def test_correctness_values_are_true_false_or_unknown_never_guessed():
    from localnat.curate.inputs.records import as_bool

    ok = (True, False, 1, 0, 1.0, 0.0, "true", " FALSE ", "1", "0", "Yes", "no ", None)
    assert [as_bool(v) for v in ok + (float("nan"),)] == [True, False] * 6 + [None, None]
    for bad in ("maybe", "", 2, 0.5, "t", "y", [True]):
        with pytest.raises(ValueError, match="use true/false, yes/no or 1/0"):
            as_bool(bad)


def test_prompt_ids_are_one_id_by_value_across_parquet_arrow_and_jsonl(tmp_path, said):
    """pandas writes an int column with a null as floats: 1 in one file and 1.0 in another
    are one prompt, and so is "1" in JSONL; 1.5 stays its own id."""
    import json

    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    from localnat.curate.choose.selection import select
    from localnat.curate.inputs.chunks import read_files
    from localnat.curate.inputs.plan import plan

    def rows(teacher):
        return [
            {"prompt": f"Q{i}?", "response": f"{teacher} says {i}.", "teacher": teacher}
            for i in (1, 2, 3)
        ]

    ints = pa.Table.from_pylist([dict(r, prompt_id=i) for i, r in zip((1, 2, 3), rows("a"))])
    pq.write_table(ints, tmp_path / "a.parquet")
    floats = pa.Table.from_pylist(
        [dict(r, prompt_id=i) for i, r in zip((1.0, 2.0, 3.0), rows("b"))]
        + [{"prompt": "Q4?", "response": "b says 4.", "teacher": "b", "prompt_id": None}]
    )
    assert floats.schema.field("prompt_id").type == pa.float64()
    feather.write_feather(floats, tmp_path / "b.feather")
    lines = [dict(r, prompt_id=i) for i, r in zip(("1", "2", 3), rows("c"))]
    lines.append({"prompt": "Q5?", "response": "c says 5.", "teacher": "c", "prompt_id": 1.5})
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in lines))

    cfg = CurateConfig(inputs=(str(tmp_path),))
    planned = plan(cfg.inputs, cfg.reading, str(tmp_path / "out"))
    (text,) = said
    assert "prompt_id" in text and "compared by value" in text
    assert "integer in 1 files (e.g. " in text and "a.parquet" in text
    assert "float in 1 files" in text and "float/integer/text in 1 files" in text
    files = [{"file_index": i, "uri": u, "root": r} for i, u, r in planned.files]
    table = pa.concat_tables(read_files(files, cfg.reading)).to_pandas()
    assert table["reject_reason"].isna().all()
    ids = table.groupby("teacher")["prompt_id"].apply(list).to_dict()
    assert ids["a"] == ["1", "2", "3"] and ids["b"][:3] == ["1", "2", "3"]
    assert ids["c"] == ["1", "2", "3", "1.5"] and ids["b"][3].startswith("p-")
    table["local_nat"] = -table["row_number"].astype(float)
    for signal in ("global_nat", "rsr", "global_entropy", "local_nofirst", "global_nofirst"):
        table[signal] = 0.0
    table["n_response_tokens"] = 1
    chosen = select(table, "local")
    assert len(chosen) == 5 and chosen["prompt_id"].is_unique  # 1, 2, 3, Q4's hash, 1.5
    assert chosen.set_index("prompt_id")["n_candidates"].loc[["1", "2", "3"]].tolist() == [3] * 3


def test_a_prompt_id_that_is_not_valid_utf8_rejects_its_row():
    from localnat.curate.inputs.records import normalize
    from localnat.curate.job_config import CurateConfig

    rec = {"prompt_id": "bad\udc80id", "prompt": "Q?", "response": "A.", "teacher": "t"}
    (row,) = normalize([(0, rec)], "x.jsonl", 0, {}, CurateConfig().reading).to_pylist()
    assert row["reject_reason"] == "prompt_id is not valid UTF-8 (unpaired surrogate)"
