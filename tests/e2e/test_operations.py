"""Operating the job: submitted to a real Ray head with `ray job submit`, and a storage
outage mid-run then a rerun that completes with no secret anywhere. (A lost scoring actor,
node and driver: tests/cluster/test_multinode.py.)"""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from s3server import SECRET_KEY

from localnat.curate.job import run_job
from localnat.curate.storage import read_parquet_dir
from localnat.testing.jobs import config, sample, wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The bundled sample cut short for the tiny model, in ten two-row shards, so a run
    finishes its files one after another and can be interrupted in between."""
    d = tmp_path_factory.mktemp("corpus")
    df = sample(1200)
    for i in range(0, len(df), 2):
        part = pa.Table.from_pandas(df.iloc[i : i + 2], preserve_index=False)
        pq.write_table(part, d / f"s{i // 2:02d}.parquet")
    return d, df


def n_files(corpus) -> int:
    return len(list(corpus[0].iterdir()))


@pytest.fixture(scope="module")
def calm(ray_local, tiny_student, corpus, tmp_path_factory):
    """An undisturbed run: what every disturbed run must end up equal to."""
    out = tmp_path_factory.mktemp("calm")
    manifest = run_job(config(tiny_student, [str(corpus[0])], str(out), run_id="calm"))
    return by_key(pq.read_table(Path(manifest["run_dir"]) / "scores").to_pandas())


def by_key(scores):
    assert scores["row_id"].is_unique, "duplicated output rows"
    return scores.set_index(["prompt_id", "teacher"])[["local_nat", "global_nat"]].sort_index()


def assert_same(scores, calm):
    got = by_key(scores)
    assert list(got.index) == list(calm.index)
    assert (got - calm).abs().max().max() < 1e-6


def test_ray_job_submit_to_a_real_head(ray_local, tiny_student, corpus, tmp_path):
    out = tmp_path / "out"
    cfg = {
        "input": [str(corpus[0])],
        "output": str(out) + "/{date}",
        "student": tiny_student,
        "window": [4],
        "run-id": "submitted",
        "call-tokens": 4000,
        "correct-column": "is_correct",
    }
    (tmp_path / "nightly.yaml").write_text(yaml.safe_dump(cfg))
    runtime_env = {"excludes": [".venv", ".git", "out"]}
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "job",
        "submit",
        "--address",
        ray_local["dashboard"],
        "--working-dir",
        str(REPO),
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--",
        "python",
        "-m",
        "jobs.curate",
        "--config",
        str(tmp_path / "nightly.yaml"),
    ]
    proc = subprocess.run(cmd, env=ray_local["env"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout
    manifest = json.loads(next(out.glob("*/submitted/manifest.json")).read_text())
    assert manifest["counts"]["scored"] == len(corpus[1])
    assert "LN rank" in proc.stdout  # the summary table reaches the job log


def test_storage_outage_mid_run_then_rerun(ray_local, s3, tiny_student, corpus, calm, capfd):
    cfg = config(tiny_student, [str(corpus[0])], "s3://outage/runs", run_id="o1", call_tokens=1)
    client = s3.client()
    result = {}

    def run():
        try:
            result["manifest"] = run_job(cfg)
        except Exception as err:  # noqa: BLE001 - failing with a clear error is allowed
            result["error"] = err

    job = threading.Thread(target=run)
    job.start()

    def some_parts():
        try:
            return client.list_objects_v2(Bucket="outage", Prefix="runs/o1/_done/")["KeyCount"]
        except Exception:  # noqa: BLE001
            return False

    assert wait_for(some_parts)
    s3.stop()
    # the outage hit mid-run: the job was still going and not every file was committed
    assert job.is_alive(), "the run finished before the outage"
    time.sleep(2)
    s3.start()
    committed = some_parts()
    job.join(timeout=600)
    assert not job.is_alive()
    # failed with a clear error or completed: either way no secret in what it returned
    assert SECRET_KEY not in repr(result)
    if "error" in result:
        assert committed < n_files(corpus), "a failed run had committed every file"
    manifest = run_job(cfg)  # completes now (or finds the run complete)
    assert manifest["status"] == "complete"
    scores = read_parquet_dir("s3://outage/runs/o1/scores").to_pandas()
    assert_same(scores, calm)
    rejects = read_parquet_dir("s3://outage/runs/o1/rejects")
    assert rejects is None  # nothing lost to rejects either

    # no secret anywhere: outputs, captured logs, Ray's logs
    captured = capfd.readouterr()
    assert SECRET_KEY not in captured.out + captured.err
    for obj in client.list_objects_v2(Bucket="outage", Prefix="runs/")["Contents"]:
        body = client.get_object(Bucket="outage", Key=obj["Key"])["Body"].read()
        assert SECRET_KEY.encode() not in body, obj["Key"]
    logs = [f for f in Path(ray_local["temp"], "session_latest", "logs").rglob("*") if f.is_file()]
    assert any("worker" in f.name for f in logs)  # this head's logs, its workers' among them
    for f in logs:
        if f.stat().st_size < 50_000_000:
            assert SECRET_KEY.encode() not in f.read_bytes(), f
