"""The commit protocol: the run identity, markers, overwrite."""

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from localnat import ScoreConfig
from localnat.curate.job_config import CurateConfig
from localnat.curate.run.identity import StudentIdentity
from localnat.curate.run.lease import Lease, RunBusy
from localnat.curate.run.outputs import start
from localnat.curate.run.resume import RunMismatch, check_same_run, run_identity
from localnat.curate.storage import write_text

STUDENT = StudentIdentity("s", {"model.safetensors": "a"})


def test_identity_uses_the_stores_version_on_s3(s3env, tmp_path):
    client = s3env.client()
    s3env.bucket("ident")
    body = b'{"prompt": "p", "response": "abc", "teacher": "t"}\n'
    client.put_object(Bucket="ident", Key="in/a.jsonl", Body=body)
    files = [(0, "s3://ident/in/a.jsonl", "s3://ident/in")]
    cfg = CurateConfig(inputs=("s3://ident/in",))
    identity = run_identity(files, cfg, STUDENT)
    assert check_same_run("s3://ident/runs/r", identity) is False  # a new run
    start("s3://ident/runs/r", identity)
    assert check_same_run("s3://ident/runs/r", run_identity(files, cfg, STUDENT))  # unchanged
    client.put_object(Bucket="ident", Key="in/a.jsonl", Body=body.replace(b"abc", b"cba"))
    with pytest.raises(RunMismatch, match="changed: inputs"):
        check_same_run("s3://ident/runs/r", run_identity(files, cfg, STUDENT))
    write_text("s3://ident/runs/r/_run.json", "{not json")
    with pytest.raises(RunMismatch, match="unreadable.*--overwrite"):
        check_same_run("s3://ident/runs/r", run_identity(files, cfg, STUDENT))


def test_the_identity_holds_everything_that_changes_a_result(tmp_path):
    pq.write_table(pa.table({"x": [1]}), tmp_path / "a.parquet")
    files = [(0, str(tmp_path / "a.parquet"), str(tmp_path))]
    other = StudentIdentity("s", {"model.safetensors": "b"})
    base = run_identity(files, CurateConfig(), STUDENT)
    for changed in (
        run_identity(files, CurateConfig(max_response_tokens=100), STUDENT),
        run_identity(files, CurateConfig(gpus_per_actor=1.0), STUDENT),  # auto -> bf16
        run_identity(files, CurateConfig(), other),  # other weights
        run_identity(files, CurateConfig(score=ScoreConfig(attn_implementation="eager")), STUDENT),
    ):
        assert changed != base
    speed = CurateConfig(score=ScoreConfig(batch_tokens=64, head_chunk=8))
    assert run_identity(files, speed, STUDENT) == base


def test_an_unreadable_lease_blocks_while_fresh_and_two_last_chunks_never_complete(tmp_path):
    from localnat.curate.run.outputs import completed_files

    run_dir = str(tmp_path / "run")
    (tmp_path / "run" / "_lease").mkdir(parents=True)
    (tmp_path / "run" / "_lease" / "x.json").write_text('{"owner": "x", "ho')  # mid-write
    with pytest.raises(RunBusy):
        with Lease(run_dir):
            pass
    old = time.time() - 3600
    import os

    os.utime(tmp_path / "run" / "_lease" / "x.json", (old, old))  # a crash long ago
    with Lease(run_dir):
        pass
    chunks = {
        (0, 0): {"last": False},
        (0, 1): {"last": True},
        (1, 0): {"last": True},
        (2, 0): {"last": True},
        (2, 1): {"last": True},
    }
    assert completed_files(chunks) == {0, 1}  # file 2 claims two ends: redo, never trust


def test_overwrite_deletes_the_manifest_first_and_run_json_last(tmp_path, monkeypatch):
    import localnat.curate.run.outputs as outputs

    run = tmp_path / "r"
    for name in ("_done/f000000-c000000.json", "_run.json", "manifest.json", "scores/p.parquet"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}")
    order = []
    real = outputs.delete
    monkeypatch.setattr(outputs, "delete", lambda uri: order.append(Path(uri).name) or real(uri))
    outputs.prepare_overwrite(str(run))
    assert order[0] == "manifest.json" and order[-1] == "_run.json" and len(order) == 4


def test_the_run_writes_only_inside_its_directory(tmp_path):
    """Every write and delete of a run goes through outputs.py by a name inside one of the
    run's directories: a name that would leave it is refused, and nothing is touched."""
    from localnat.curate.run.outputs import remove, write

    run = tmp_path / "out" / "r1"
    (tmp_path / "out" / "other").mkdir(parents=True)
    (tmp_path / "out" / "other" / "keep.json").write_text("{}")
    assert write(str(run), "selected/f000000.json", "{}").endswith("r1/selected/f000000.json")
    for name in ("../other/keep.json", "/etc/x", "s3://b/k", "a//b", "./x", "", "x/.."):
        with pytest.raises(ValueError, match="not a path inside"):
            write(str(run), name, "{}")
        with pytest.raises(ValueError, match="not a path inside"):
            remove(str(run), name)
    assert (tmp_path / "out" / "other" / "keep.json").read_text() == "{}"
    remove(str(run), "selected")  # a folder: every file under it
    assert not list((run / "selected").glob("*"))


def test_selected_parts_count_only_with_their_marker_and_their_rows_digest(tmp_path):
    """A part is an output of selected/ when its marker holds the digest asked for and the
    part is there; anything else (another choice's part, a part never committed, a marker
    whose part is gone) is deleted, inside the run's directory only."""
    import json

    from localnat.curate.run.outputs import commit_selected, committed_selected

    run = tmp_path / "r"
    (run / "selected").mkdir(parents=True)
    for name in ("f000000", "f000001", "f000002", "f000003"):
        (run / "selected" / f"{name}.parquet").write_bytes(b"part")
    for name, digest in (("f000000", "a"), ("f000001", "old"), ("f000004", "e")):
        commit_selected(str(run), f"{name}.parquet", {"digest": digest})
    outside = tmp_path / "selected"
    outside.mkdir()
    (outside / "f000009.parquet").write_bytes(b"not the run's")
    keep = {"f000000.parquet": "a", "f000001.parquet": "b", "f000004.parquet": "e"}
    kept = committed_selected(str(run), keep)
    assert kept == {"f000000.parquet": {"digest": "a"}}
    assert sorted(p.name for p in (run / "selected").iterdir()) == ["f000000.parquet"]
    assert [p.name for p in (run / "_selected").iterdir()] == ["f000000.json"]
    assert json.loads((run / "_selected" / "f000000.json").read_text()) == {"digest": "a"}
    assert (outside / "f000009.parquet").exists()
