"""The curation job end to end on a local Ray cluster, against a real S3 server (SeaweedFS)."""

import base64
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from localnat import ScoreConfig, Scorer
from localnat.curate.inputs.plan import InputError
from localnat.curate.job import run_job
from localnat.curate.report.show import plot_prompt, show_run
from localnat.curate.run.resume import RunMismatch
from localnat.curate.storage import read_parquet_dir, read_text
from localnat.testing.jobs import config, outputs, sample, write_corpus


def test_s3_end_to_end_matches_the_api(ray_local, s3, tiny_student, tmp_path):
    client = s3.client()
    client.create_bucket(Bucket="corpus")
    df = sample()
    write_corpus(df, lambda key, data: client.put_object(Bucket="corpus", Key=key, Body=data))

    results = {}
    for actors in (1, 2):
        cfg = config(
            tiny_student,
            ["s3://corpus/corpus/"],
            "s3://out/runs/{date}",
            run_id=f"a{actors}",
            actors=actors,
        )
        manifest = run_job(cfg)
        run_dir = "s3://" + manifest["run_dir"].split("://", 1)[1]
        scores = read_parquet_dir(f"{run_dir}/scores").to_pandas().set_index("row_id")
        results[actors] = scores
        c = manifest["counts"]
        assert c["input_rows"] == len(df) == c["scored"] + c["rejected"] and c["rejected"] == 0
        assert c["selected"] == c["prompts"] == df.prompt_id.nunique()
        for name in ("teachers.json", "teachers.md", "manifest.json"):
            assert read_text(f"{run_dir}/{name}")
        # the longest responses, named by the sources scores/ holds for them
        longest = scores.sort_values("n_response_tokens", ascending=False).head(5)
        expensive = manifest["most_expensive_rows"]
        assert [r["response_tokens"] for r in expensive] == longest["n_response_tokens"].tolist()
        by_source = scores.set_index("source")
        for r in expensive:
            row = by_source.loc[r["source"]]
            assert (row["teacher"], row["n_response_tokens"]) == (
                r["teacher"],
                r["response_tokens"],
            )
        assert client.head_object(Bucket="out", Key=run_dir.split("out/", 1)[1] + "/teachers.png")

    # identical whatever the number of actors and blocks
    a, b = results[1], results[2].loc[results[1].index]
    np.testing.assert_allclose(a["local_nat"], b["local_nat"], atol=1e-6)

    # the job's scores equal score_responses on the same rows
    scores = results[2]
    by_key = {(r.prompt_id, r.teacher): r for r in scores.itertuples()}
    scorer = Scorer(ScoreConfig(student=tiny_student, windows=(4, 0.25), device="cpu"))
    api = scorer.score(df.prompt.tolist(), df.response.tolist()).to_pylist()
    for row, expect in zip(df.itertuples(), api):
        got = by_key[(row.prompt_id, row.teacher)]
        assert abs(got.local_nat - expect["local_nat"]) < 1e-5
        assert abs(got.local_nat_w25 - expect["local_nat_w25"]) < 1e-5
        assert abs(got.global_nat - expect["global_nat"]) < 1e-5
        assert list(got.step_starts) == expect["step_starts"]

    # selected: original columns + scores, only correct candidates, best LN per prompt
    selected = read_parquet_dir(f"{run_dir}/selected").to_pandas()
    assert {
        "reference_answer",
        "subject",
        "teacher",
        "local_nat",
        "n_candidates",
        "selected_by",
    } <= set(selected.columns)
    assert selected["is_correct"].all() and selected["prompt_id"].is_unique
    correct = scores[scores["is_correct"]]
    best = correct.sort_values("local_nat", ascending=False).groupby("prompt_id").head(1)
    assert set(best.index) == set(selected["row_id"])
    board = json.loads(read_text(f"{run_dir}/teachers.json"))
    assert set(board["teachers"]) == set(df.teacher)
    assert board["n_matched_prompts"] == df.prompt_id.nunique()

    # looking at the finished run: the summary and a per-step plot, from S3, no recompute
    shown = show_run(run_dir)
    assert all(t in shown for t in df.teacher) and f"rows: {len(df)} in" in shown
    pid = selected["prompt_id"].iloc[0]
    out = plot_prompt(run_dir, pid, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG" and out.endswith("p.png")
    with pytest.raises(LookupError, match="no scored response"):
        plot_prompt(run_dir, "no-such-prompt", str(tmp_path / "q.png"))


def test_bad_input_is_rejected_with_reasons_and_nothing_is_lost(ray_local, tiny_student, tmp_path):
    good = sample(800).head(8).copy()
    good.loc[len(good)] = good.iloc[0]  # a duplicate row
    solo = good.iloc[1].copy()
    solo["teacher"], solo["prompt"], solo["prompt_id"] = "lonely", "Only one teacher here?", None
    good.loc[len(good)] = solo  # a teacher with a single row, a prompt with one teacher
    d = tmp_path / "in"
    d.mkdir()
    pq.write_table(pa.Table.from_pandas(good, preserve_index=False), d / "good.parquet")
    raw = (d / "good.parquet").read_bytes()
    (d / "truncated.parquet").write_bytes(raw[: len(raw) // 2])
    (d / "garbage.parquet").write_bytes(b"not parquet at all" * 10)
    base = {"prompt_id": "pz", "teacher": "T", "is_correct": True}
    lines = [
        json.dumps({**base, "prompt": None, "response": "x"}),
        json.dumps({**base, "prompt": "Q", "response": ""}),
        json.dumps({**base, "prompt": "Q", "response": 42}),
        json.dumps({**base, "prompt": "Q"}),
        json.dumps({**base, "prompt": "Q", "response": " \n\t "}),
        json.dumps({**base, "prompt": "Q", "response": "word " * 2_100_000}),
        '{"prompt": "Q", "response": "unterminated',
        b'{"prompt": "Q", "teacher": "T", "response": "\xff\xfe bad"}'.decode("latin-1"),
        json.dumps({**base, "prompt": "Q", "response": "A fine answer. It is 4."}),
    ]
    (d / "bad.jsonl").write_bytes("\n".join(lines).encode("latin-1"))

    manifest = run_job(config(tiny_student, [str(d)], str(tmp_path / "out"), run_id="bad"))
    run_dir = Path(manifest["run_dir"])
    scores = pq.read_table(run_dir / "scores").to_pandas()
    rejects = pq.read_table(run_dir / "rejects").to_pandas()
    c = manifest["counts"]
    assert c["input_rows"] == c["scored"] + c["rejected"] == len(scores) + len(rejects)
    assert c["input_rows"] == len(good) + len(lines) + 2  # +1 row for each unreadable file
    assert not set(scores.row_id) & set(rejects.row_id)
    assert scores.row_id.is_unique and rejects.row_id.is_unique
    assert len(scores) == len(good) + 1
    reasons = " | ".join(rejects.reject_reason)
    for expected in (
        "prompt is missing",
        "response is empty",
        "response is a int",
        "missing field 'response'",
        "over max_chars",
        "not valid JSON",
        "not valid UTF-8",
        "unreadable file",
    ):
        assert expected in reasons, expected
    assert rejects.reject_reason.str.contains("unreadable file").sum() == 2
    assert c["duplicates"] == 1
    assert "lonely" in json.loads((run_dir / "teachers.json").read_text())["teachers"]


def test_missing_columns_fail_before_any_model_work(tmp_path):
    pq.write_table(
        pa.table({"question": ["q"], "answer": ["a"], "teacher": ["t"]}), tmp_path / "x.parquet"
    )
    cfg = config("/nonexistent/model", [str(tmp_path)], str(tmp_path / "out"))
    with pytest.raises(InputError) as err:
        run_job(cfg)
    assert "missing ['prompt', 'response', 'is_correct']" in str(err.value)
    assert "present: ['answer', 'question', 'teacher']" in str(err.value)


def test_rerun_resume_and_overwrite_never_duplicate(ray_local, tiny_student, tmp_path):
    """A complete run answers again; asked to choose otherwise it keeps every score and
    rewrites only the selected/ parts whose rows changed; a run killed anywhere, selected/
    included, resumes to the same outputs; --overwrite redoes it."""
    d = tmp_path / "in"
    d.mkdir()
    df = sample(600)
    for i, (_, part) in enumerate(df.groupby("prompt_id")):  # > 64 KB: a part per prompt
        pad = [base64.b64encode(os.urandom(24_000)).decode() for _ in part.index]
        part = part.assign(pad=pad, extra=part["level"] if i % 2 else part["level"].astype(str))
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), d / f"s{i}.parquet")
    cfg = config(tiny_student, [str(d)], str(tmp_path / "out"), run_id="r1")
    first = run_job(cfg)
    run_dir = Path(first["run_dir"])
    ids = sorted(pq.read_table(run_dir / "scores").column("row_id").to_pylist())
    parts = sorted(p.name for p in (run_dir / "selected").glob("*.parquet"))
    assert len(parts) >= 2 and first["counts"]["selected_parts_written"] == len(parts)
    assert "extra" in first["selected_text_columns"]  # an int here, a string there

    again = run_job(cfg)  # complete: not redone
    assert again["finished_utc"] == first["finished_utc"]
    assert again["report"] == first["report"]  # the short summary, not teachers.md
    assert "longest responses (tokens):" in again["report"]

    # another signal asked of the complete run: chosen again from its scores, none rescored;
    # every part rewritten (each names its choice, `selected_by`), none of LN's left
    rechosen = run_job(replace(cfg, select_by="global"))
    scores = pq.read_table(run_dir / "scores").to_pandas()
    correct = scores[scores["is_correct"]]
    best = correct.sort_values("global_nat", ascending=False).groupby("prompt_id").head(1)
    selected = pq.read_table(run_dir / "selected").to_pandas()
    assert (
        set(selected["row_id"])
        == set(best["row_id"])
        != set(
            correct.sort_values("local_nat", ascending=False).groupby("prompt_id").head(1)["row_id"]
        )
    )
    assert (selected["selected_by"] == "global").all()
    assert rechosen["choice"]["select_by"] == "global" != first["choice"]["select_by"]
    assert rechosen["counts"]["files_resumed"] == len(first["inputs"])
    assert rechosen["counts"]["selected_parts_resumed"] == 0
    assert rechosen["counts"]["selected_parts_written"] == len(list(run_dir.glob("selected/*")))
    assert run_job(replace(cfg, select_by="global"))["finished_utc"] == rechosen["finished_utc"]
    # a complete run of other scoring settings is refused, as a resume is
    other = config(tiny_student, [str(d)], str(tmp_path / "out"), run_id="r1", window=2)
    with pytest.raises(RunMismatch, match="other inputs, student or scoring settings.*--window"):
        run_job(other)
    first = run_job(cfg)  # by LN again: the run as it first was
    by_ln = read_parquet_dir(str(run_dir / "selected")).to_pandas().sort_values("row_id")

    # killed while writing selected/: one part written, not committed; a stray part
    (run_dir / "manifest.json").unlink()
    (run_dir / "_selected" / parts[0].replace(".parquet", ".json")).unlink()
    (run_dir / "selected" / "f000099.parquet").write_bytes(b"half a part")
    kept = {p: (run_dir / "selected" / p).stat().st_mtime_ns for p in parts[1:]}
    resumed = run_job(cfg)
    assert resumed["counts"]["selected_parts_written"] == 1
    assert resumed["counts"]["selected_parts_resumed"] == len(parts) - 1
    assert sorted(p.name for p in (run_dir / "selected").glob("*")) == parts
    assert {p: (run_dir / "selected" / p).stat().st_mtime_ns for p in parts[1:]} == kept
    back = read_parquet_dir(str(run_dir / "selected")).to_pandas().sort_values("row_id")
    assert back.reset_index(drop=True).equals(by_ln.reset_index(drop=True))

    # an interrupted run: manifest never written, one file not marked done, stray parts
    (run_dir / "manifest.json").unlink()
    (run_dir / "_done" / "f000001-c000000.json").unlink()
    stray = next((run_dir / "scores").glob("f000001-*"))
    (run_dir / "scores" / "f000001-stray.parquet").write_bytes(stray.read_bytes())
    resumed = run_job(cfg)
    assert sorted(pq.read_table(run_dir / "scores").column("row_id").to_pylist()) == ids
    assert resumed["counts"]["scored"] == len(df)

    redone = run_job(replace(cfg, overwrite=True))
    assert redone["finished_utc"] != first["finished_utc"]
    assert sorted(pq.read_table(run_dir / "scores").column("row_id").to_pylist()) == ids
    assert len(pq.read_table(run_dir / "selected")) == df.prompt_id.nunique()

    # a ranking chooses none: no part of a former choice is left in selected/
    ranked = run_job(replace(cfg, rank_teachers=True))
    assert ranked["counts"]["selected"] == 0
    assert list(run_dir.glob("selected/*")) == list(run_dir.glob("_selected/*")) == []

    # resuming with other settings would mix scores: refused, with the way out named
    (run_dir / "manifest.json").unlink()
    other = config(tiny_student, [str(d)], str(tmp_path / "out"), run_id="r1", window=2)
    with pytest.raises(RunMismatch, match="other inputs, student or scoring settings.*--window"):
        run_job(other)


def test_dry_run_lists_files_and_rows_without_a_model(tmp_path):
    pq.write_table(
        pa.Table.from_pandas(sample().head(5), preserve_index=False), tmp_path / "a.parquet"
    )
    out = run_job(config("/nonexistent/model", [str(tmp_path)], str(tmp_path / "o"), dry_run=True))
    assert out["dry_run"] and out["input_rows"] == 5
    assert not (tmp_path / "o").exists()


def test_a_run_leaves_the_callers_logging_and_environment_as_they_were(tmp_path, monkeypatch):
    """A library call (a notebook's): the localnat logger propagates to the caller's
    handlers again after it, and the environment holds what it held."""
    import logging
    import os

    from localnat.logs import QUIET_ENV

    for key in QUIET_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")  # the caller's own
    log = logging.getLogger("localnat")
    monkeypatch.setattr(log, "handlers", [])
    monkeypatch.setattr(log, "propagate", True)
    pq.write_table(
        pa.Table.from_pandas(sample().head(2), preserve_index=False), tmp_path / "a.parquet"
    )
    run_job(config("/nonexistent/model", [str(tmp_path)], str(tmp_path / "o"), dry_run=True))
    assert log.propagate and log.handlers == []
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"
    assert not [key for key in QUIET_ENV if key != "TRANSFORMERS_VERBOSITY" and key in os.environ]


def test_a_run_from_the_command_line_prints_only_its_own_lines(ray_local, tiny_student, tmp_path):
    """Quiet by default: no Ray core-worker lines, no progress bars, no worker tracebacks;
    every line is localnat's (`[localnat] ...`) or the summary."""
    import subprocess
    import sys

    pq.write_table(
        pa.Table.from_pandas(sample(400).head(6), preserve_index=False), tmp_path / "a.parquet"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "localnat.cli",
            "curate",
            "--student",
            tiny_student,
            "--input",
            str(tmp_path / "a.parquet"),
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**ray_local["env"], "RAY_ADDRESS": ray_local["address"]},
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    for noise in ("core_worker", "%|", "(raylet)", "Traceback", "it/s]"):
        assert noise not in text, noise
    lines = [line for line in text.splitlines() if line.strip()]
    summary = lines.index(next(line for line in lines if line.startswith("teacher ")))
    assert all(line.startswith("[localnat] ") for line in lines[:summary]), lines[:summary]
    assert lines[-1].startswith("outputs: ")


def test_the_dry_run_predicts_the_model_tokens_a_run_counts(ray_local, tiny_student, tmp_path):
    """Model tokens are the unit of cost: the manifest counts every token the student ran
    (and the padding beside them); the dry run predicts them from the student's tokenizer,
    packing rows into calls as the reading stage does (on the bundled demo: within 5%).
    `--signals local` runs fewer of them for the same LN."""
    from localnat.testing.jobs import DEMO

    runs = {}
    for name, flags in {
        "every": {},
        "sampled": {"sample_steps": 0.5, "select_by": "global", "call_tokens": 2500},
        "local": {"signals": "local"},
    }.items():
        dry = run_job(config(tiny_student, [str(DEMO)], str(tmp_path / "o"), dry_run=True, **flags))
        run = run_job(config(tiny_student, [str(DEMO)], str(tmp_path / "o"), run_id=name, **flags))
        ran = runs[name] = run["counts"]["model_tokens"]
        assert ran > sum(r["response_tokens"] for r in run["most_expensive_rows"])
        assert run["counts"]["padded_tokens"] >= ran
        assert abs(dry["model_tokens"] - ran) <= 0.05 * ran, (name, dry["model_tokens"], ran)
    assert runs["local"] < runs["every"]
    every, local = (outputs(tmp_path / "o" / n)["scores"] for n in ("every", "local"))
    assert (every["local_nat"] - local["local_nat"]).abs().max() < 1e-6
    assert local["global_nat"].isna().all() and local["rsr"].isna().all()
