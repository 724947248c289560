"""Unit tests of the small pieces: token batching, input discovery, hive columns, reports."""

from itertools import combinations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from localnat.curate.inputs import hive_columns, list_inputs
from localnat.curate.report import markdown, png
from localnat.scoring.batching import Segment, make_batches


def seg(i, n, group=0):
    return Segment(i, group, np.arange(3), np.arange(n), 0)


def test_make_batches_by_padded_tokens_longest_first():
    lengths = [5, 17, 3, 9, 9, 1, 30, 2]
    batches = make_batches([seg(i, n) for i, n in enumerate(lengths)], batch_tokens=20)
    keys = [s.key for b in batches for s in b]
    assert sorted(keys) == list(range(len(lengths)))  # every segment exactly once
    flat = [len(s.tokens) for b in batches for s in b]
    assert flat == sorted(lengths, reverse=True)
    for b in batches:
        padded = len(b) * len(b[0].tokens)  # padded to the first (longest) segment
        assert padded <= 20 or len(b) == 1  # over budget only alone
    # 30 | 17 (2 x 17 > 20) | 9 9 (3 x 9 > 20) | 5 3 2 1 (4 x 5 = 20)
    assert [len(b) for b in batches] == [1, 1, 2, 4]
    assert make_batches([], 20) == []


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


def board(teachers):
    stats = lambda r, m: {  # noqa: E731
        "mean": m,
        "ci95": [m - 0.1, m + 0.1],
        "median": m,
        "rank": r,
        "win_rate": {o: 0.5 for o in teachers if o != teachers[r - 1]},
    }
    return {
        "teachers": teachers,
        "n_prompts": 3,
        "n_matched_prompts": 2,
        "kendall_tau_b": 1.0,
        "rank_correlation": [
            {"a": a, "b": b, "kendall_tau_b": 1.0}
            for a, b in combinations(["local", "global", "rsr", "entropy"], 2)
        ],
        "bootstrap": {"n": 10, "seed": 0},
        "warning": None,
        "per_teacher": {
            t: {
                "local": stats(i + 1, -1.0 - i),
                "global": stats(i + 1, -0.5 - i),
                "rsr": stats(i + 1, 2.0 + i),
                "entropy": stats(i + 1, 1.0 + i),
                "n_responses": 2,
                "accuracy": 0.5,
            }
            for i, t in enumerate(teachers)
        },
    }


def test_markdown_report_is_a_table_even_with_odd_teacher_names():
    teachers = ["plain", "with | pipe", "two\nlines", "$\\foo{$"]
    text = markdown(board(teachers), "student-x")
    rows = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert rows and rows[0].count("|") == 9  # 8 columns: the name's pipe is escaped
    assert "with \\| pipe" in text and "two lines" in text
    assert "| 2 | with \\| pipe | -2.000 (-2.100, -1.900) | -2.000 | 2 |" in text
    assert "2 matched prompts" in text and "student-x" in text


def test_png_report_renders_odd_teacher_names():
    data = png(board(["plain", "$\\foo{$", "a_b^c"]), "student $x$")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
