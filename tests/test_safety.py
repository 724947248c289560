"""Nothing lost, nothing deleted: run-directory safety, one run per directory, progress kept
in chunks, resumes that match their inputs, no credentials in URIs, odd ids and files."""

import gzip
import json
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from s3server import SECRET_KEY
from test_job import config, sample

from localnat import ScoreConfig, Scorer
from localnat.curate.commit import Lease, RunBusy, RunMismatch, check_same_run, run_identity
from localnat.curate.config import CurateConfig
from localnat.curate.identity import StudentIdentity
from localnat.curate.inputs import list_inputs
from localnat.curate.job import InputError, check_student, run_job
from localnat.curate.pipeline import read_files
from localnat.curate.records import normalize
from localnat.curate.storage import list_files, read_parquet_dir, write_text
from localnat.options import parse_config
from localnat.redact import redact

REPO = Path(__file__).resolve().parent.parent
STUDENT = StudentIdentity("s", {"model.safetensors": "a"})


def shards(d: Path, df, rows_per_file: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(df), rows_per_file):
        part = pa.Table.from_pandas(df.iloc[i : i + rows_per_file], preserve_index=False)
        pq.write_table(part, d / f"s{i // rows_per_file:02d}.parquet")
    return d


def bucket(s3, name: str) -> None:
    client = s3.client()
    if name not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=name)


def wait_for(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# 1. run ids are one path segment; --overwrite deletes only a localnat run directory


def test_run_id_dotdot_is_refused_before_anything_is_touched(tmp_path, capsys):
    victim = tmp_path / "victim"
    (victim / "runs").mkdir(parents=True)
    (victim / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit) as err:
        parse_config(["--output", str(victim / "runs"), "--run-id", "..", "--overwrite"])
    assert err.value.code == 2 and "run-id" in capsys.readouterr().err
    assert (victim / "precious.txt").read_text() == "keep me"


def test_overwrite_never_deletes_a_directory_that_is_not_a_localnat_run(tiny_student, tmp_path):
    (tmp_path / "in").mkdir()
    pq.write_table(pa.Table.from_pandas(sample().head(2)), tmp_path / "in" / "a.parquet")
    foreign = tmp_path / "out" / "x"
    foreign.mkdir(parents=True)
    (foreign / "precious.txt").write_text("keep me")
    cfg = config(tiny_student, [str(tmp_path / "in")], str(tmp_path / "out"), run_id="x")
    with pytest.raises(RunMismatch, match="--overwrite refused.*nothing was deleted"):
        run_job(replace(cfg, overwrite=True))
    assert (foreign / "precious.txt").read_text() == "keep me"
    assert not list((foreign / "_lease").glob("*")), "the refused run left its lease behind"


# 2. one run per run directory, on local files and on S3


@pytest.mark.parametrize("where", ["local", "s3"])
def test_lease_is_exclusive_and_a_dead_runs_lease_is_taken_over(s3env, tmp_path, where):
    bucket(s3env, "leases")
    run_dir = str(tmp_path / "run") if where == "local" else "s3://leases/runs/r1"
    with Lease(run_dir) as first:
        with pytest.raises(RunBusy, match="another run holds .*wait for it to finish"):
            with Lease(run_dir):
                pass
        assert [u.rsplit("/", 1)[-1] for u in list_files(f"{run_dir}/_lease")] == [
            f"{first.owner}.json"
        ]  # the refused run withdrew its own lease
    assert list_files(f"{run_dir}/_lease") == []  # released
    # a killed run's lease (its process is gone) and an expired one do not block
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = {"owner": "dead", "host": __import__("socket").gethostname(), "pid": dead.pid}
    write_text(f"{run_dir}/_lease/dead.json", json.dumps({**stale, "expires": time.time() + 600}))
    old = {"owner": "old", "host": "elsewhere", "pid": 1, "expires": time.time() - 1}
    write_text(f"{run_dir}/_lease/old.json", json.dumps(old))
    with Lease(run_dir):
        pass
    # a live lease of a run on another host blocks until it expires
    live = {"owner": "live", "host": "elsewhere", "pid": 1, "expires": time.time() + 600}
    write_text(f"{run_dir}/_lease/live.json", json.dumps(live))
    with pytest.raises(RunBusy, match="host elsewhere"):
        with Lease(run_dir):
            pass


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_second_run_on_a_live_run_directory_is_refused_and_nothing_is_lost(
    ray_local, s3, tiny_student, tmp_path, where
):
    df = sample(600).head(8)
    inputs = shards(tmp_path / "in", df, 2)
    out = str(tmp_path / "out") if where == "local" else "s3://concurrent/runs"
    if where == "s3":
        bucket(s3, "concurrent")
    cfg = config(tiny_student, [str(inputs)], out, run_id="same", call_tokens=1)
    result = {}
    first = threading.Thread(target=lambda: result.update(run_job(cfg)))
    first.start()
    assert wait_for(lambda: list_files(f"{out}/same/_lease"))
    with pytest.raises(RunBusy, match="another run holds"):
        run_job(cfg)
    first.join(timeout=600)
    assert result["counts"]["input_rows"] == result["counts"]["scored"] == len(df)
    scores = read_parquet_dir(f"{out}/same/scores")
    assert scores.num_rows == len(df) and len(set(scores.column("row_id").to_pylist())) == len(df)


# 3. progress is committed in chunks as it is made


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
        rows = chunks_of(read_files(item, cfg))
        assert [r["chunk"] for r in rows] == [i // 3 for i in range(n)]
        ends = [(r["chunk"], r["chunk_rows"], r["last_chunk"]) for r in rows if r["chunk_rows"]]
        assert ends == [(c, k, c == len(expect) - 1) for c, k in enumerate(expect)]
        # chunks committed earlier are read past, not emitted
        item = item.set_column(3, "skip", pa.array([[0, len(expect) - 1]], pa.list_(pa.int64())))
        skipped = [1, 1, 1] if n == 7 else []
        assert [r["chunk"] for r in chunks_of(read_files(item, cfg))] == skipped


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
    rows = chunks_of(read_files(item, CurateConfig(correct_column="is_correct")))
    read = [r for r in rows if r["reject_reason"] is None]
    assert 1 <= len(read) < len(df)
    assert rows[-1]["reject_reason"].startswith(f"unreadable file: rows from {len(read)} on")
    assert rows[-1]["last_chunk"] is True and rows[-1]["chunk_rows"] == len(read) + 1


def test_a_killed_run_keeps_its_chunks_and_the_resume_skips_them(ray_local, tiny_student, tmp_path):
    df = sample(300)
    df = df.loc[df.index.repeat(6)].reset_index(drop=True)
    df["prompt_id"] = [f"{p}-{i % 6}" for i, p in enumerate(df["prompt_id"])]  # all distinct
    (tmp_path / "in").mkdir()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "in" / "big.parquet")
    args = [
        "--student",
        tiny_student,
        "--output",
        str(tmp_path / "out"),
        "--run-id",
        "big",
        "--input",
        str(tmp_path / "in"),
        "--call-tokens",
        "1",
        "--commit-rows",
        "3",
        "--ray-address",
        ray_local["address"],
    ]
    driver = subprocess.Popen(
        [sys.executable, "-m", "jobs.curate", *args],
        cwd=REPO,
        env=ray_local["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    done = tmp_path / "out" / "big" / "_done"
    assert wait_for(lambda: done.exists() and len(list(done.iterdir())) >= 2)
    driver.terminate()  # SIGTERM: a clean, resumable exit
    err, _ = driver.communicate(timeout=120)
    assert driver.returncode == 143, err[-2000:]
    assert "interrupted" in err and "Aborted" not in err and "core dump" not in err
    kept = len(list(done.iterdir()))
    n_chunks = -(-len(df) // 3)
    assert 2 <= kept < n_chunks, "the run finished before it was stopped"
    manifest = run_job(parse_config(args[:-2]))
    assert manifest["counts"]["chunks_resumed"] == kept  # nothing committed is redone
    assert manifest["counts"]["input_rows"] == manifest["counts"]["scored"] == len(df)
    scores = pq.read_table(tmp_path / "out" / "big" / "scores").to_pandas()
    assert scores["row_id"].is_unique and len(scores) == len(df)
    api = Scorer(ScoreConfig(student=tiny_student, device="cpu")).score(
        df.prompt.tolist(), df.response.tolist()
    )
    expect = dict(zip(zip(df.prompt_id, df.teacher), api.column("local_nat").to_pylist()))
    for pid, teacher, ln in zip(scores.prompt_id, scores.teacher, scores.local_nat):
        assert abs(ln - expect[(pid, teacher)]) < 1e-5


# 4. a resume must see the inputs it started with


def test_an_edited_input_of_the_same_size_refuses_the_resume(ray_local, tiny_student, tmp_path):
    df = sample(300).head(4)
    inputs = shards(tmp_path / "in", df, 2)
    cfg = config(tiny_student, [str(inputs)], str(tmp_path / "out"), run_id="e")
    run_job(cfg)
    (tmp_path / "out" / "e" / "manifest.json").unlink()  # as if it crashed before the end
    edited = df.copy()
    edited.loc[0, "response"] = edited.loc[0, "response"][::-1]  # same size, other text
    shards(inputs, edited, 2)
    with pytest.raises(RunMismatch, match="changed: inputs"):
        run_job(cfg)
    shards(inputs, df, 2)  # the original content back, but a new mtime: still refused
    with pytest.raises(RunMismatch, match="changed: inputs"):
        run_job(cfg)
    with pytest.raises(RunMismatch, match="settings --input-format"):
        run_job(replace(cfg, input_format="parquet"))


def test_identity_uses_the_stores_version_on_s3(s3env, tmp_path):
    client = s3env.client()
    bucket(s3env, "ident")
    body = b'{"prompt": "p", "response": "abc", "teacher": "t"}\n'
    client.put_object(Bucket="ident", Key="in/a.jsonl", Body=body)
    files = [(0, "s3://ident/in/a.jsonl", "s3://ident/in")]
    cfg = CurateConfig(inputs=("s3://ident/in",))
    check_same_run("s3://ident/runs/r", run_identity(files, cfg, STUDENT))
    check_same_run("s3://ident/runs/r", run_identity(files, cfg, STUDENT))  # unchanged: fine
    client.put_object(Bucket="ident", Key="in/a.jsonl", Body=body.replace(b"abc", b"cba"))
    with pytest.raises(RunMismatch, match="changed: inputs"):
        check_same_run("s3://ident/runs/r", run_identity(files, cfg, STUDENT))
    write_text("s3://ident/runs/r/_run.json", "{not json")
    with pytest.raises(RunMismatch, match="unreadable.*--overwrite"):
        check_same_run("s3://ident/runs/r", run_identity(files, cfg, STUDENT))


# 5. credentials never travel in URIs


def test_credentials_in_a_uri_are_refused_without_printing_them(capsys):
    uri = "s3://AKIAFAKEKEY123:SECRETxyz123@data/outc"
    with pytest.raises(SystemExit):
        parse_config(["--output", uri])
    err = capsys.readouterr().err
    assert "credentials inside a URI are not accepted" in err and "environment" in err
    assert "SECRETxyz123" not in err and "AKIAFAKEKEY123" not in err
    # and anything that slips into a message is redacted, with or without a scheme
    text = redact(f"bucket AKIAFAKEKEY123:{SECRET_KEY}@data/outc, {uri}")
    assert SECRET_KEY not in text and "SECRETxyz123" not in text and "AKIAFAKEKEY123" not in text


# 6. a missing or NaN prompt id is the prompt-text hash, never "nan"


def test_missing_or_nan_prompt_ids_fall_back_to_the_prompt_hash():
    cfg = CurateConfig()
    rows = [
        (0, {"prompt": "A?", "response": "x.", "teacher": "t", "prompt_id": float("nan")}),
        (1, {"prompt": "B?", "response": "y.", "teacher": "t", "prompt_id": float("nan")}),
        (2, {"prompt": "A?", "response": "z.", "teacher": "u", "prompt_id": None}),
        (3, {"prompt": "B?", "response": "w.", "teacher": "u", "prompt_id": " "}),
        (4, {"prompt": "C?", "response": "v.", "teacher": "u", "prompt_id": 7}),
    ]
    ids = normalize(rows, "f.jsonl", 0, {}, cfg).column("prompt_id").to_pylist()
    assert ids[0] == ids[2] != ids[1] == ids[3] and ids[4] == "7"
    assert all(i.startswith("p-") for i in ids[:4]) and "nan" not in ids


# 7. the smaller traps


def test_a_missing_or_broken_student_is_one_clear_line_before_any_ray_work(tmp_path):
    start = time.time()
    with pytest.raises(InputError, match="cannot load the student") as err:
        check_student(CurateConfig(score=ScoreConfig(student=str(tmp_path / "nope"))))
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot load the student"):
        check_student(CurateConfig(score=ScoreConfig(student=str(broken))))
    assert time.time() - start < 30


def test_outputs_inside_the_input_directory_are_not_read_back(tmp_path):
    pq.write_table(pa.table({"x": [1]}), tmp_path / "a.parquet")
    (tmp_path / "out" / "run1" / "scores").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "out" / "run1" / "scores" / "p.parquet")
    found = [u for u, _ in list_inputs([str(tmp_path)], exclude=str(tmp_path / "out"))]
    assert found == [str(tmp_path / "a.parquet")]


def test_a_corrupt_manifest_is_rebuilt_from_the_committed_chunks(ray_local, tiny_student, tmp_path):
    df = sample(300).head(4)
    cfg = config(
        tiny_student, [str(shards(tmp_path / "in", df, 2))], str(tmp_path / "o"), run_id="m"
    )
    first = run_job(cfg)
    (tmp_path / "o" / "m" / "manifest.json").write_text('{"status": "compl')
    again = run_job(cfg)
    assert again["status"] == "complete" and again["counts"]["files_resumed"] == 2
    assert again["counts"]["scored"] == first["counts"]["scored"] == len(df)
    assert again["throughput"]["response_tokens_this_run"] == 0  # nothing rescored


def test_input_columns_named_like_ours_are_kept_not_overwritten(ray_local, tiny_student, tmp_path):
    df = sample(300).head(4).copy()
    df["row_id"] = ["theirs-1", "theirs-2", "theirs-3", "theirs-4"]
    df["local_nat"] = 123.0
    cfg = config(
        tiny_student, [str(shards(tmp_path / "in", df, 4))], str(tmp_path / "o"), run_id="c"
    )
    manifest = run_job(cfg)
    selected = pq.read_table(tmp_path / "o" / "c" / "selected").to_pandas()
    assert set(selected["input_row_id"]) <= set(df["row_id"])
    assert (selected["input_local_nat"] == 123.0).all() and (selected["local_nat"] < 0).all()
    assert selected["row_id"].dtype.kind == "i"
    assert manifest["renamed_input_columns"] == {
        "local_nat": "input_local_nat",
        "row_id": "input_row_id",
    }


def test_max_response_tokens_rejects_longer_responses_with_a_reason(tiny_student):
    from localnat.curate.pipeline import Tokenize

    df = sample(300).head(3)
    table = normalize(list(enumerate(df.to_dict("records"))), "f.parquet", 0, {}, CurateConfig())
    cfg = CurateConfig(score=ScoreConfig(student=tiny_student), max_response_tokens=40)
    out = Tokenize(cfg)(table)
    n = [
        len(ids) if ids else 0
        for ids in Tokenize(CurateConfig(score=ScoreConfig(student=tiny_student)))(table)
        .column("response_ids")
        .to_pylist()
    ]
    reasons = out.column("reject_reason").to_pylist()
    assert any(k > 40 for k in n)
    for k, reason in zip(n, reasons):
        if k > 40:
            assert reason == f"response has {k:,} tokens, over max-response-tokens"
        else:
            assert reason is None


# Review findings: each a scenario that lost or mixed rows before


def test_selected_rows_keep_every_column_and_survive_surrogates():
    from localnat.curate.selection import _table

    table, as_text = _table([{"a": 1}, {"a": 2, "answer": "x"}, {"a": 3, "s": "bad\udc80"}])
    assert table.column_names == ["a", "answer", "s"]  # not only the first record's keys
    assert table.column("answer").to_pylist() == [None, "x", None]
    assert table.column("s").to_pylist()[2] == "bad\\udc80" and as_text == []
    table, as_text = _table([{"v": 1}, {"v": "one"}])
    assert table.column("v").to_pylist() == ["1", "one"] and as_text == ["v"]


def test_credentials_whose_secret_holds_a_slash_are_refused_and_redacted():
    uri = "s3://AKIAX:wJal/K7MD/bPxR@bucket/data/"
    with pytest.raises(Exception, match="credentials inside a URI"):
        CurateConfig(inputs=(uri,))
    assert "K7MD" not in redact(f"input not found: {uri}")
    assert CurateConfig(inputs=("s3://bucket/user@example.com/x.jsonl",)).inputs  # a key


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
    from localnat.curate.commit import completed_files

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
    import localnat.curate.commit as commit

    run = tmp_path / "r"
    for name in ("_done/f000000-c000000.json", "_run.json", "manifest.json", "scores/p.parquet"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}")
    order = []
    real = commit.delete
    monkeypatch.setattr(commit, "delete", lambda uri: order.append(Path(uri).name) or real(uri))
    commit.prepare_overwrite(str(run))
    assert order[0] == "manifest.json" and order[-1] == "_run.json" and len(order) == 4


def test_a_storage_error_fails_the_read_and_a_corrupt_file_is_a_reject(tmp_path, monkeypatch):
    import localnat.curate.pipeline as pipeline

    def rows_then(err):
        def read_rows(uri, fmt, cols, n):
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
    monkeypatch.setattr(pipeline, "read_rows", rows_then(OSError("connection reset")))
    with pytest.raises(OSError, match="connection reset"):  # retried/resumed, never committed
        list(read_files(item, CurateConfig()))
    monkeypatch.setattr(pipeline, "read_rows", rows_then(EOFError("gzip ends early")))
    rows = chunks_of(read_files(item, CurateConfig()))
    assert rows[0]["reject_reason"] is None
    assert rows[1]["reject_reason"].startswith("unreadable file: rows from 1 on not read")
