"""Nothing lost, nothing deleted: one run per directory, progress kept in chunks, resumes that
match their inputs, overwrite only of a localnat run."""

import threading
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from localnat import ScoreConfig, Scorer
from localnat.curate.job import run_job
from localnat.curate.run.lease import RunBusy
from localnat.curate.run.resume import RunMismatch
from localnat.curate.storage import list_files, read_parquet_dir
from localnat.options import parse_config
from localnat.testing.jobs import config, sample, shards, wait_for
from localnat.testing.jobs import driver as start

REPO = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_second_run_on_a_live_run_directory_is_refused_and_nothing_is_lost(
    ray_local, s3, tiny_student, tmp_path, where
):
    df = sample(600).head(8)
    inputs = shards(tmp_path / "in", df, 2)
    out = str(tmp_path / "out") if where == "local" else "s3://concurrent/runs"
    if where == "s3":
        s3.bucket("concurrent")
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
    driver = start(args, ray_local["env"])
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


@pytest.mark.parametrize("when", ["reading", "selecting"])
def test_an_input_rewritten_during_the_run_stops_it_naming_the_file(
    ray_local, tiny_student, tmp_path, when
):
    """Rewritten while it is read: its chunk is not committed (the file's version is checked
    at each commit); rewritten once scored: selected/ checks every row it reads back against
    the content scored. Either way the run stops naming the file, never selecting text it
    did not score."""
    from localnat.curate.run.resume import InputChanged
    from localnat.testing.jobs import OnLog

    df = sample(300).head(12)
    shards(tmp_path / "in", df, rows_per_file=6)
    victim = tmp_path / "in" / "s01.parquet"

    def rewrite():
        other = df.iloc[6:].copy()
        other["response"] = other["response"].str.upper()  # same rows, other text
        pq.write_table(pa.Table.from_pandas(other, preserve_index=False), victim)

    cfg = config(tiny_student, [str(tmp_path / "in")], str(tmp_path / "out"), run_id=when)
    line = ", pass scores: " if when == "reading" else "reduce: "
    with OnLog(line, rewrite) as hook, pytest.raises(InputChanged, match="s01.parquet") as err:
        run_job(cfg)
    assert hook.done and "\n" not in str(err.value)
    assert not (tmp_path / "out" / when / "manifest.json").exists()
    if when == "reading":
        markers = [p.name for p in (tmp_path / "out" / when / "_done").glob("*.json")]
        assert markers and not any(m.startswith("f000001-") for m in markers)


def test_sigterm_stops_a_run_waiting_for_actors_it_cannot_place(ray_local, tiny_student, tmp_path):
    """A cluster joined (it may grow, so not refused up front) that can never place the
    actors: the run waits, and a scheduler's SIGTERM still stops it, cleanly and soon."""
    import time

    pq.write_table(pa.Table.from_pandas(sample(200).head(2)), tmp_path / "a.parquet")
    args = ["--student", tiny_student, "--output", str(tmp_path / "out"), "--run-id", "w"]
    args += ["--input", str(tmp_path / "a.parquet"), "--cpus-per-actor", "64"]
    args += ["--ray-address", ray_local["address"]]
    driver = start(args, ray_local["env"])
    lease = tmp_path / "out" / "w" / "_lease"
    assert wait_for(lambda: lease.exists() and any(lease.iterdir()), timeout=120)
    time.sleep(8)  # into the wait for the actors
    assert driver.poll() is None, driver.communicate()[0][-2000:]
    stopped = time.time()
    driver.terminate()
    out, _ = driver.communicate(timeout=60)
    assert driver.returncode == 143, out[-2000:]
    assert time.time() - stopped < 30 and "interrupted" in out
    assert not any(lease.iterdir())  # its lease released: a retry may start at once
