"""The Score stage's calls keep every row of a call they cannot score whole."""

import pyarrow as pa
import pytest

from localnat import ScoreConfig, Scorer
from localnat.curate.job_config import CurateConfig
from localnat.curate.run.graph import Calls, call_row
from localnat.curate.run.passes import scores_pass


def test_a_row_that_keeps_failing_is_rejected_not_the_batch(tok, model):
    from localnat.scoring.prepare import Preparer

    cfg = ScoreConfig(student="tiny")
    scorer = Scorer(cfg, model=model, tokenizer=tok)
    real = scorer.score_prepared
    poison = "This row breaks the worker."

    def fragile(items):
        if any(
            it.response_ids is not None
            and len(it.response_ids) == len(bad.response_ids)
            and (it.response_ids == bad.response_ids).all()
            for it in items
        ):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(items)

    bad = Preparer(tok, cfg)("Q?", poison)
    scorer.score_prepared = fragile
    stage = Calls(scorer, scores_pass(CurateConfig().score))
    prep = [Preparer(tok, cfg)("Q?", r) for r in ("Fine answer. Yes.", poison, "Also fine.")]
    table = pa.table(
        {
            "reject_reason": pa.array([None, None, None], pa.string()),
            "prompt_ids": [p.prompt_ids.tolist() for p in prep],
            "response_ids": [p.response_ids.tolist() for p in prep],
            "bounds": [p.bounds.tolist() for p in prep],
            "step_starts": [[s for s, _ in p.spans] for p in prep],
            "step_ends": [[e for _, e in p.spans] for p in prep],
        }
    )
    out = stage(call_row([table], 0)).to_pylist()
    assert out[0]["reject_reason"] is None and out[2]["reject_reason"] is None
    assert "scoring failed: RuntimeError: CUDA error" in out[1]["reject_reason"]
    assert out[0]["local_nat"] is not None


@pytest.mark.parametrize("first", [True, False], ids=["after-a-batch", "before-any"])
def test_a_pass_left_early_leaves_no_thread_inside_ray(ray_local, first):
    """Ray's core worker ends the whole process (status 1) when any thread calls it after
    the driver has left Ray: a pass stopped by SIGTERM or an error, after its first batch or
    while the first is still being made, leaves no thread waiting on Ray."""
    import threading
    import time

    import ray.data

    from localnat.curate.run.graph import cancel
    from localnat.curate.run.progress import STOP_WAIT_S, interruptible

    graph = ray.data.range(1000, override_num_blocks=1000).map_batches(
        lambda b: (time.sleep(2), b)[1], batch_size=1
    )  # minutes of work, longer than the wait for a stopped stream
    stream = graph.iter_batches(batch_size=None)
    started = time.monotonic()
    with pytest.raises(KeyError):
        with interruptible(stream, stop=lambda: cancel(graph)) as batches:
            next(batches) if first else time.sleep(1)
            raise KeyError("stopped")  # as SIGTERM's Terminated would
    assert time.monotonic() - started < STOP_WAIT_S, "the stream was run to its end"
    alive = [t.name for t in threading.enumerate() if t.name == "localnat-pull"]
    assert not alive, "the pulling thread still waits on Ray"
    running = [t for t in threading.enumerate() if type(t).__name__ == "StreamingExecutor"]
    assert not running, "Ray Data's executor still runs"


def test_a_reading_process_keeps_its_tokenizer_and_checks_the_student_again(
    tiny_student, tmp_path, monkeypatch
):
    """`pack` runs as Ray tasks whose process the next pass reuses: the tokenizer loaded once
    serves the next task of the same student and settings, after the student's files are
    checked again; another student or setting loads its own."""
    import shutil
    from dataclasses import replace

    from localnat.curate.run import graph
    from localnat.curate.run.identity import StudentChanged, identify

    copy = tmp_path / "student"
    shutil.copytree(tiny_student, copy)
    student = identify(str(copy), None, {})
    calling = CurateConfig.from_options(student=str(copy), input=["x.parquet"]).resolved().calling
    loads = []
    real = graph.load_tokenizer
    monkeypatch.setattr(graph, "load_tokenizer", lambda score: loads.append(1) or real(score))
    monkeypatch.setattr(graph, "_HELD", {})
    first = graph._tokenize(student, calling)
    assert graph._tokenize(student, calling) is first and len(loads) == 1
    other = replace(calling, max_response_tokens=(calling.max_response_tokens or 10**6) - 1)
    assert graph._tokenize(student, other) is not first and len(loads) == 2
    (copy / "tokenizer.json").write_text((copy / "tokenizer.json").read_text() + " ")
    with pytest.raises(StudentChanged):
        graph._tokenize(student, other)  # held, yet its files are no longer those identified
