"""A run on a Ray cluster of several nodes (one machine: `ray.cluster_utils.Cluster`, a head
that schedules nothing and two workers, each room for one scoring actor): a worker lost
without grace mid-scoring and a fresh one joining, the driver lost with the head, the score
cache served by reading actors on two nodes, and a local output some node does not see.
The jobs run as drivers of their own (`python -m jobs.curate`), as `ray job submit` runs
them; this process never joins these clusters (it may be a driver of the suite's own Ray)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from localnat import ScoreConfig, Scorer
from localnat.testing.cluster import Nodes
from localnat.testing.jobs import assert_same_outputs, sample, shards, wait_for
from localnat.testing.jobs import driver as start

ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}
ROWS_PER_FILE = 10  # four input files of over 64 KiB: four reading calls


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_student):
    """40 rows (4 files), all distinct, and what the API scores them."""
    d = tmp_path_factory.mktemp("multinode")
    df = sample(300)
    df = df.loc[df.index.repeat(2)].reset_index(drop=True)
    df["prompt_id"] = [f"{p}-{i % 2}" for i, p in enumerate(df["prompt_id"])]
    df["pad"] = [os.urandom(8000).hex() for _ in range(len(df))]  # each file read alone
    shards(d / "in", df, ROWS_PER_FILE)
    api = Scorer(ScoreConfig(student=tiny_student, device="cpu")).score(
        df.prompt.tolist(), df.response.tolist()
    )
    expect = dict(zip(zip(df.prompt_id, df.teacher), api.column("local_nat").to_pylist()))
    return d, df, expect


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    cluster = Nodes(tmp_path_factory.mktemp("home"))
    yield cluster
    cluster.close()


def args(d: Path, run_id: str, address: str, *extra: str) -> list[str]:
    return [
        *("--input", str(d / "in"), "--output", str(d / "out"), "--run-id", run_id),
        *("--actors", "2", "--cpus-per-actor", "2", "--call-tokens", "1", "--commit-rows", "3"),
        *("--ray-address", address, *extra),
    ]


def committed(d: Path, run_id: str) -> int:
    done = d / "out" / run_id / "_done"
    return len(list(done.glob("*.json"))) if done.exists() else 0


def rows_committed(d: Path, run_id: str) -> int:
    markers = (d / "out" / run_id / "_done").glob("*.json")
    return sum(json.loads(m.read_text())["scored"] for m in markers)


def finished(proc) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def manifest(d: Path, run_id: str) -> dict:
    return json.loads((d / "out" / run_id / "manifest.json").read_text())


def scored_once_and_exact(d: Path, run_id: str, df: pd.DataFrame, expect: dict) -> None:
    scores = pd.read_parquet(d / "out" / run_id / "scores")
    assert scores["row_id"].is_unique and len(scores) == len(df)
    for pid, teacher, ln in zip(scores.prompt_id, scores.teacher, scores.local_nat):
        assert abs(ln - expect[(pid, teacher)]) < 1e-5


def test_a_worker_lost_mid_scoring_and_a_fresh_one_joining_cost_no_row(nodes, corpus, tiny_student):
    d, df, expect = corpus
    proc = start(
        ["--student", tiny_student, *args(d, "lost", nodes.address, "--cache", str(d / "c"))],
        ENV,
    )
    assert wait_for(lambda: committed(d, "lost") >= 3 or proc.poll() is not None, 240)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    nodes.kill(nodes.workers[0])  # one scoring actor's machine, gone
    nodes.workers.append(nodes.add())  # an autoscaler's fresh node
    lost_at = rows_committed(d, "lost")
    finished(proc)
    m = manifest(d, "lost")
    assert lost_at < m["counts"]["input_rows"] == m["counts"]["scored"] == len(df)
    scored_once_and_exact(d, "lost", df, expect)
    # the scoring actors sat on both workers (node ids in rows_per_actor)
    per_actor = m["calls"]["rows_per_actor"]
    assert len({actor.split("/")[0] for actor in per_actor}) >= 2, per_actor


def test_a_local_output_a_node_does_not_see_stops_the_run_before_scoring(
    nodes, corpus, tiny_student, tmp_path
):
    """A node whose `~` is another folder (as another machine's disk would be)."""
    d, _, _ = corpus
    home, elsewhere = Path(nodes.env["HOME"]), tmp_path / "elsewhere"
    blind = nodes.add(env={"HOME": str(elsewhere)})
    try:
        flags = ["--output", "~/out", "--run-id", "blind", "--actors", "2", "--cpus-per-actor", "2"]
        proc = start(
            [
                "--student",
                tiny_student,
                "--input",
                str(d / "in"),
                *flags,
                "--ray-address",
                nodes.address,
            ],
            {**ENV, "HOME": str(home)},
        )
        out, _ = proc.communicate(timeout=300)
    finally:
        nodes.kill(blind)
    assert proc.returncode != 0
    (line,) = [x for x in out.splitlines() if "do not see" in x]
    assert "--output: ~/out/blind is a local path that 1 of 4 nodes do not see" in line
    assert blind.node_id[:12] in line and "s3://" in line
    assert not (home / "out" / "blind" / "scores").exists() and not elsewhere.exists()


def test_the_driver_lost_with_the_head_resumes_on_a_new_cluster_from_the_cache_on_two_nodes(
    nodes, corpus, tiny_student
):
    """The rerun reads the first test's cache on a new cluster; the cache's key index, built
    once, answers alike from either worker node."""
    d, df, expect = corpus
    proc = start(["--student", tiny_student, *args(d, "head", nodes.address)], ENV)
    assert wait_for(lambda: committed(d, "head") >= 2 or proc.poll() is not None, 240)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGKILL)  # the driver's machine: the head, gone with it
    proc.wait(timeout=30)
    nodes.close()
    kept, kept_rows = committed(d, "head"), rows_committed(d, "head")
    again = Nodes(Path(nodes.env["HOME"]))
    try:
        flags = args(d, "head", again.address, "--cache", str(d / "c"))
        finished(start(["--student", tiny_student, *flags], ENV))
        (ns,) = (d / "c").iterdir()
        looked = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("lookup_on_nodes.py")),
                again.address,
                str(ns),
            ],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        again.close()
    assert looked.returncode == 0, looked.stderr[-3000:]
    index = json.loads(looked.stdout.strip().splitlines()[-1])
    # the index, built once, mapped on each worker node: every key found, at the same place
    assert len(index["nodes"]) == 2 and index["reference"][0] == index["keys"] > 0
    assert all(answer == index["reference"] for answer in index["nodes"].values()), index
    m = manifest(d, "head")
    assert m["counts"]["chunks_resumed"] == kept > 0  # nothing committed is redone
    assert m["counts"]["cache_hits"] == len(df) - kept_rows  # the rest: the cache's
    scored_once_and_exact(d, "head", df, expect)
    assert_same_outputs(d / "out" / "lost", d / "out" / "head")
