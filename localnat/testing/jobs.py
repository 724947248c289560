"""The job's test fixtures: slices of the bundled real traces, corpora written as shards,
configs built through the real CLI parser, and a run's outputs in a comparable form."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..curate.job_config import (
    DEMO,  # noqa: F401 - a fixture of the tests too
    CurateConfig,
)
from ..curate.storage import read_parquet_dir
from ..options import parse_config
from .students import SAMPLE_DIR

SAMPLE = SAMPLE_DIR / "mip_math_sample.parquet"  # long-CoT MATH traces (sample/README.md)
LONG_COT = {"QwQ-32B", "s1.1-32B", "LIMO-32B"}
COLUMNS = ["prompt_id", "prompt", "teacher", "response", "is_correct"]


def sample(max_chars: int = 1500) -> pd.DataFrame:
    """MATH answers of five teachers (three long-CoT), responses cut to `max_chars`."""
    df = pq.read_table(SAMPLE).to_pandas()
    df["response"] = df["response"].str.slice(0, max_chars)
    keep = df["teacher"].isin(LONG_COT | {"gpt-4o", "o1 (final answer only)"})
    return df[keep].reset_index(drop=True)


def corpus() -> pd.DataFrame:
    """50 real rows: `sample(600)` and the GSM8K demo's answers of six teachers, responses
    cut to 600 characters (the tiny student's context)."""
    gsm = pq.read_table(DEMO).to_pandas()
    df = pd.concat([sample(600)[COLUMNS], gsm[COLUMNS]], ignore_index=True)
    df["response"] = df["response"].str.slice(0, 600)
    return df


def write_corpus(df: pd.DataFrame, put) -> None:
    """Long-CoT teachers as hive-partitioned Parquet (teacher from the path), the rest
    JSONL.gz; `put(key, bytes)` stores one object."""
    for teacher, part in df[df.teacher.isin(LONG_COT)].groupby("teacher"):
        table = pa.Table.from_pandas(part.drop(columns=["teacher"]), preserve_index=False)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        put(f"corpus/teacher={quote(teacher)}/part-0.parquet", sink.getvalue().to_pybytes())
    rest = df[~df.teacher.isin(LONG_COT)]
    lines = "\n".join(json.dumps(r) for r in rest.to_dict("records"))
    put("corpus/short/answers.jsonl.gz", gzip.compress(lines.encode()))


def shards(d: Path, df: pd.DataFrame, rows_per_file: int) -> Path:
    """`df` as Parquet files of `rows_per_file` rows under `d`, in order."""
    d.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(df), rows_per_file):
        part = pa.Table.from_pandas(df.iloc[i : i + rows_per_file], preserve_index=False)
        pq.write_table(part, d / f"s{i // rows_per_file:02d}.parquet")
    return d


def config(student, inputs, output, **flags) -> CurateConfig:
    """A config through the real CLI parser: correctness column, windows 4 and 0.25, calls
    of 4,000 tokens, then `flags` (`run_id="x"` is `--run-id x`, True a bare flag)."""
    args = ["--student", str(student), "--output", str(output), "--correct-column", "is_correct"]
    args += ["--window", "4", "--window", "0.25", "--call-tokens", "4000"]
    for key, value in flags.items():
        flag = f"--{key.replace('_', '-')}"
        args += [flag] if value is True else [flag, str(value)]
    for uri in inputs:
        args += ["--input", str(uri)]
    return parse_config(args)


def outputs(run_dir: Path) -> dict:
    """Every output of a run, in a comparable form (rows in row_id order)."""
    out = {}
    for name in ("scores", "rejects", "selected"):
        table = read_parquet_dir(str(run_dir / name))
        if table is not None:
            df = table.to_pandas().sort_values("row_id").reset_index(drop=True)
            out[name] = df[sorted(df.columns)]
    out["teachers"] = json.loads((run_dir / "teachers.json").read_text())
    return out


def assert_same_outputs(a: Path, b: Path) -> None:
    """Two runs' outputs equal, exactly (a cache hit carries the bits a fresh score gave)."""
    x, y = outputs(a), outputs(b)
    assert x.keys() == y.keys()
    for name in x:
        if name == "teachers":
            assert x[name] == y[name]
        else:
            pd.testing.assert_frame_equal(x[name], y[name], check_exact=True)


def score_table(rows) -> pd.DataFrame:
    """Hand-made compact score rows (row_id, prompt_id, teacher, local_nat, global_nat,
    is_correct[, rsr, global_entropy]); without the last two, those signals are a constant
    a test ignores; content_hash = row_id (no duplicates unless a test makes one)."""
    columns = ["row_id", "prompt_id", "teacher", "local_nat", "global_nat", "is_correct"]
    df = pd.DataFrame(rows, columns=columns + ["rsr", "global_entropy"][: len(rows[0]) - 6])
    for signal in ("rsr", "global_entropy"):
        if signal not in df:
            df[signal] = 1.0
    df["local_nofirst"], df["global_nofirst"], df["n_response_tokens"] = np.nan, np.nan, 100
    df["content_hash"] = df["row_id"]
    return df


# Three prompts whose right choices are known (tests of selection and the leaderboard).
HAND_ROWS = [
    # prompt p1: B best on LN (tie with C broken by smaller row_id), A best on GN
    (1, "p1", "A", -1.0, -0.1, True),
    (5, "p1", "C", -0.5, -0.9, True),
    (3, "p1", "B", -0.5, -0.8, False),
    # prompt p2: A best on LN but incorrect
    (4, "p2", "A", -0.2, -0.5, False),
    (2, "p2", "B", -0.7, -0.4, True),
    (6, "p2", "C", -0.9, -0.3, True),
    # prompt p3: answered by A only (unmatched)
    (7, "p3", "A", -3.0, -3.0, True),
]


# Three teachers whose signals order them differently: A best by LN, GN and entropy (lower
# first), C by rsr (lower is better); correctness unknown.
SIGNAL_ROWS = [
    (1, "p1", "A", -0.4, -0.4, None, 3.0, 1.0),
    (2, "p1", "B", -0.9, -0.9, None, 2.5, 2.0),
    (3, "p1", "C", -1.4, -1.4, None, 1.0, 3.0),
    (4, "p2", "A", -0.6, -0.6, None, 3.0, 1.0),
    (5, "p2", "B", -1.1, -1.1, None, 1.5, 2.0),
    (6, "p2", "C", -1.6, -1.6, None, 1.0, 3.0),
]


def wait_for(predicate, timeout: float = 120.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


class OnLog:
    """A logging handler on the localnat logger that does `action` once, when a line holding
    `text` is logged: a test's way to act at a precise point of a run (between identifying
    the student and loading it, between scoring and selecting)."""

    def __init__(self, text: str, action):
        import logging

        self.text, self.action, self.done = text, action, False
        self.handler = logging.Handler()
        self.handler.emit = self._emit

    def _emit(self, record) -> None:
        if not self.done and self.text in record.getMessage():
            self.done = True
            self.action()

    def __enter__(self):
        import logging

        logging.getLogger("localnat").addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        import logging

        logging.getLogger("localnat").removeHandler(self.handler)


def driver(args: list[str], env: dict, quiet: bool = False):
    """`python -m jobs.curate ARGS` started as a scheduler starts it (its own process, the
    repository as its working directory), its output captured as text unless `quiet`."""
    import subprocess
    import sys

    out = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.curate", *args],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=out,
        stderr=subprocess.DEVNULL if quiet else subprocess.STDOUT,
        text=True,
    )
