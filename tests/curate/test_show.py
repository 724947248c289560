"""`localnat show` and `plot` on whatever directory they are given: a complete run, or one
line that says what the directory is and what to do."""

import json
import socket

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from localnat.cli import main
from localnat.curate.report.show import listed_parts
from localnat.testing import scorer


def shown(capsys, run_dir) -> tuple[int, list[str]]:
    code = main(["show", str(run_dir)])
    return code, capsys.readouterr().err.strip().splitlines()


def test_show_on_what_is_not_a_complete_run_says_what_it_is_in_one_line(tmp_path, capsys):
    cases = {
        "missing": (tmp_path / "nope", "is empty or missing"),
        "empty": (tmp_path / "empty", "is empty or missing"),
        "foreign": (tmp_path / "foreign", "not a localnat run directory"),
        "incomplete": (
            tmp_path / "incomplete",
            "is an incomplete run (no manifest.json; chunks committed: 1, input files complete: 1)",
        ),
        "corrupt": (tmp_path / "corrupt", "manifest.json is unreadable: rerun"),
        "older": (tmp_path / "older", "was written by localnat 0.0.1"),
        "a file": (tmp_path / "older" / "manifest.json", "is a file: give the directory"),
        "killed": (tmp_path / "killed", "killed or failed: rerun `localnat curate`"),
    }
    (tmp_path / "empty").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    for name in ("incomplete", "corrupt", "older", "killed"):
        d = tmp_path / name
        (d / "_done").mkdir(parents=True)
        (d / "_run.json").write_text("{}")
        marker = {"last": True, "parts": [], "scored": 0, "rejected": 0}
        (d / "_done" / "f000000-c000000.json").write_text(json.dumps(marker))
    (tmp_path / "corrupt" / "manifest.json").write_text("{cut sh")
    # killed -9 a moment ago: its lease unexpired, its process gone (a pid no process has)
    dead = {"owner": "x", "host": socket.gethostname(), "pid": 2**22 + 1, "expires": 2e9}
    (tmp_path / "killed" / "_lease").mkdir()
    (tmp_path / "killed" / "_lease" / "x.json").write_text(json.dumps(dead))
    (tmp_path / "older" / "manifest.json").write_text(json.dumps({"localnat_version": "0.0.1"}))
    (tmp_path / "older" / "teachers.json").write_text(json.dumps({"teachers": ["a"]}))
    for name, (where, says) in cases.items():
        code, lines = shown(capsys, where)
        assert code == 1 and len(lines) == 1, (name, lines)
        assert lines[0].startswith("localnat: error: ") and says in lines[0], (name, lines)
    # an incomplete run says how to finish it
    _, lines = shown(capsys, tmp_path / "incomplete")
    assert "rerun `localnat curate` with the same --output and --run-id" in lines[0]


@pytest.fixture
def incomplete_run(tmp_path, model, tok):
    """A run killed after one committed chunk (real scores of two teachers' answers), with
    a part of a later chunk written but never committed."""
    scores = scorer(model, tok).score(["Q?"] * 3, ["Yes. It is 4.", "No. It is 5.", "Ghost. 6."])
    ids = pa.table(
        {
            "row_id": [1, 2, 3],
            "prompt_id": ["p"] * 3,
            "teacher": ["a", "b", "ghost"],
        }
    )
    for name in scores.column_names:
        ids = ids.append_column(name, scores.column(name))
    run = tmp_path / "run"
    (run / "scores").mkdir(parents=True)
    (run / "_done").mkdir()
    (run / "_run.json").write_text("{}")
    pq.write_table(ids.slice(0, 2), run / "scores" / "f000000-c000000-a.parquet")
    pq.write_table(ids.slice(2), run / "scores" / "f000000-c000001-b.parquet")  # uncommitted
    marker = {"last": False, "parts": ["scores/f000000-c000000-a.parquet"], "scored": 2}
    (run / "_done" / "f000000-c000000.json").write_text(json.dumps({**marker, "rejected": 0}))
    return run


def test_plot_on_an_incomplete_run_says_so_and_reads_committed_parts_only(incomplete_run, capsys):
    parts = listed_parts(str(incomplete_run), "scores/")
    assert [p.rsplit("/", 1)[-1] for p in parts] == ["f000000-c000000-a.parquet"]
    png = incomplete_run / "p.png"
    assert main(["plot", str(incomplete_run), "--prompt-id", "p", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "is an incomplete run" in printed and "plotting its committed rows" in printed
    assert printed.strip().splitlines()[-1] == str(png)
