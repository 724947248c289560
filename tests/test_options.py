"""x"""

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from localnat.curate.job_config import DEMO, CurateConfig
from localnat.curate.run.identity import StudentIdentity
from localnat.curate.run.resume import run_identity
from localnat.fields import OptionError
from localnat.options import all_options, options_markdown, parse_config
from localnat.scoring.config import ScoreConfig
from localnat.scoring.student import load_model, load_tokenizer
from localnat.scoring.windows import Window
from localnat.testing import save_tiny_student

README = Path(__file__).resolve().parent.parent / "README.md"


def from_file(tmp_path, values: dict, *flags, suffix=".yaml"):
    path = tmp_path / f"c{suffix}"
    if suffix == ".toml":
        lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text(yaml.safe_dump(values))
    return parse_config(["--config", str(path), *flags])


WRONG = {
    "trust-remote-code": "false",  # bool as a string: this once turned remote code ON
    "overwrite": "no",
    "dry-run": 1,
    "call-tokens": "64",  # int as a string
    "max-tokens": 8.5,
    "seed": True,  # a bool is not an int
    "gpus-per-actor": "0.5",  # float as a string
    "cpus-per-actor": [1],  # optional float as a list
    "student": 5,  # str as a number
    "window": [{"k": 4}],  # list element of the wrong kind
    "input": {"a": 1},  # list as a mapping
    "select-by": "best",  # not one of the choices
    "dtype": "fp8",
}


@pytest.mark.parametrize("key", sorted(WRONG))
def test_mistyped_config_values_are_errors_naming_the_key(tmp_path, capsys, key):
    with pytest.raises(SystemExit) as err:
        from_file(tmp_path, {key: WRONG[key]})
    assert err.value.code == 2
    assert key in capsys.readouterr().err


def test_every_option_type_is_covered_by_the_mistyped_test():
    kinds = {str(o.hint) for o in all_options()}
    covered = {str(o.hint) for o in all_options() if o.key in WRONG}
    assert kinds == covered


def test_python_callers_get_the_same_checks():
    with pytest.raises(OptionError, match="trust-remote-code"):
        ScoreConfig(trust_remote_code="false")
    with pytest.raises(OptionError, match="call-tokens"):
        CurateConfig(call_tokens="64")
    with pytest.raises(OptionError, match="window"):
        ScoreConfig(windows=(True,))
    assert ScoreConfig(windows=4).windows == (Window(k=4),)
    assert ScoreConfig(windows=("k2", 0.5)).windows == (Window(k=2), Window(w=0.5))


def test_policies_live_in_the_config_and_are_decided_once():
    """`resolved` decides every policy default once (run_job calls it first): no GPUs for
    the actors, the students run on CPU, whoever builds the config; building validates only."""
    plain = CurateConfig()
    assert plain.cpus_per_actor is None and plain.call_tokens is None  # validated, not decided
    cfg = plain.resolved()
    assert cfg.score.device == "cpu" and cfg.cpus_per_actor == 0.5 and cfg.call_tokens == 8192
    assert cfg.inputs == (str(DEMO),) and cfg.correct_column == "is_correct"  # the first run
    assert cfg.resolved() == cfg
    gpu = CurateConfig(gpus_per_actor=1.0).resolved()
    assert gpu.score.device == "auto" and gpu.cpus_per_actor == 1.0
    assert gpu.call_tokens == 1_000_000
    assert parse_config([]).resolved().score.device == "cpu"
    assert parse_config(["--gpus-per-actor", "1"]).resolved().cpus_per_actor == 1.0
    given = CurateConfig(inputs=("a.parquet",), call_tokens=5, cpus_per_actor=2.0).resolved()
    assert (given.inputs, given.correct_column, given.call_tokens) == (("a.parquet",), None, 5)
    assert given.cpus_per_actor == 2.0


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_flags_replace_file_values_for_every_list_option(tmp_path, suffix):
    values = {"window": [4], "input": ["a.parquet", "b.parquet"], "call-tokens": 8}
    values["signals"] = ["local", "global"]
    flags = ["--window", "2", "--input", "c.parquet", "--signals", "rsr,local"]
    cfg = from_file(tmp_path, values, *flags, suffix=suffix)
    assert cfg.score.windows == (Window(k=2),)
    assert cfg.inputs == ("c.parquet",)
    assert cfg.score.signals == ("rsr", "local")
    assert cfg.call_tokens == 8  # the file's value where no flag is given
    lists = {o.key for o in all_options() if o.repeatable}
    assert lists == {"window", "input", "signals"}  # a new list option needs a line above
    cfg = from_file(tmp_path, values, suffix=suffix)
    assert cfg.score.windows == (Window(k=4),) and cfg.inputs == ("a.parquet", "b.parquet")


def test_scalar_flags_win_and_booleans_can_be_turned_off(tmp_path):
    cfg = from_file(tmp_path, {"overwrite": True, "seed": 3}, "--no-overwrite", "--seed", "5")
    assert cfg.overwrite is False and cfg.seed == 5


def test_unknown_keys_and_empty_lists_are_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        from_file(tmp_path, {"batch_tokenz": 8})
    assert "batch-tokenz" in capsys.readouterr().err
    with pytest.raises(OptionError, match="input: an empty list"):
        CurateConfig.from_options(input=[])  # not silently the bundled sample


@pytest.mark.parametrize("run_id", ["..", ".", "a/b", "../x", "x\n", "", "-rf", ".hidden"])
def test_run_id_is_one_safe_path_segment(run_id):
    with pytest.raises(OptionError, match="run-id"):
        CurateConfig(run_id=run_id)
    assert CurateConfig(run_id="2026-11-26_night.1").run_id == "2026-11-26_night.1"


def test_readme_options_table_is_the_generated_one():
    text = README.read_text()
    table = re.search(r"<!-- options:start[^>]*-->\n(.*?)<!-- options:end -->", text, re.S)
    assert table, "README lacks the options table markers"
    assert table.group(1) == options_markdown(), "regenerate: python -m localnat.options"


CUSTOM_CODE = """
from pathlib import Path
Path(MARKER).write_text("custom code ran")
from transformers import LlamaConfig, LlamaForCausalLM
from localnat.testing.jobs import config, sample

class CustomConfig(LlamaConfig):
    model_type = "custom_llama"

class CustomModel(LlamaForCausalLM):
    config_class = CustomConfig
"""


@pytest.fixture
def remote_code_student(tmp_path):
    path = tmp_path / "student"
    save_tiny_student(path)
    (path / "custom.py").write_text(f"MARKER = {str(tmp_path / 'RAN')!r}\n" + CUSTOM_CODE)
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "custom_llama"
    config["auto_map"] = {
        "AutoConfig": "custom.CustomConfig",
        "AutoModelForCausalLM": "custom.CustomModel",
    }
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_custom_model_code_runs_only_when_trust_remote_code_is_exactly_true(
    remote_code_student, tmp_path
):
    ran = (tmp_path / "RAN").exists
    student = str(remote_code_student)
    cfg = parse_config(["--student", student])
    assert cfg.score.trust_remote_code is False
    with pytest.raises(Exception):  # noqa: B017 - transformers refuses the unknown model type
        load_model(cfg.score)
    load_tokenizer(cfg.score)
    assert not ran()
    with pytest.raises(SystemExit):  # the string "false" never reaches the loader
        from_file(tmp_path, {"student": student, "trust-remote-code": "false"})
    assert not ran()
    # the test can fail: with the flag the code does run
    load_model(parse_config(["--student", student, "--trust-remote-code"]).score)
    assert ran()


def test_toml_on_python_3_10_reads_with_tomli(tmp_path, monkeypatch):
    # Python 3.10 has no tomllib; the `tomli` dependency (same API) is used there.
    import sys
    import types

    import tomllib

    import localnat.options as options

    fake = types.ModuleType("tomli")
    fake.loads = lambda text: {**tomllib.loads(text), "seed": 7}  # proves tomli was called
    monkeypatch.setitem(sys.modules, "tomli", fake)
    monkeypatch.setattr(options.sys, "version_info", (3, 10, 13))
    path = tmp_path / "c.toml"
    path.write_text("window = [4, 0.25]\ncall-tokens = 8\n")
    assert options.read_config_file(str(path)) == {"window": [4, 0.25], "call-tokens": 8, "seed": 7}


def test_run_id_dotdot_is_refused_before_anything_is_touched(tmp_path, capsys):
    victim = tmp_path / "victim"
    (victim / "runs").mkdir(parents=True)
    (victim / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit) as err:
        parse_config(["--output", str(victim / "runs"), "--run-id", "..", "--overwrite"])
    assert err.value.code == 2 and "run-id" in capsys.readouterr().err
    assert (victim / "precious.txt").read_text() == "keep me"


def test_a_bad_attention_kernel_stops_in_one_line_before_ray(tmp_path):
    start = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "localnat.cli", "curate", "--attn-implementation", "fast"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"},  # a Ray start would fail loudly
    )
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--attn-implementation" in lines[0] and "sdpa" in lines[0]
    assert time.time() - start < 30
    for flags in (["--device", "cuda:x"], ["--device", "cuda"]):  # cuda without GPUs asked
        out = subprocess.run(
            [sys.executable, "-m", "localnat.cli", "curate", *flags],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
        assert "device" in out.stderr


def test_options_declare_what_they_change():
    """Each option's declared class decides the resume identity and the cache namespace:
    a SCORES option changes both, a ROWS option only the resume, the others neither."""

    from localnat.curate.cache.score_cache import ScoreCache
    from localnat.curate.job_config import CurateConfig
    from localnat.fields import ROWS, SCORES
    from localnat.options import all_options
    from localnat.scoring.config import ScoreConfig
    from localnat.scoring.windows import Window

    other = {  # a valid other value per option
        "inputs": ("x.parquet",),
        "input_format": "jsonl",
        "output": "o2",
        "cache": "c2",
        "run_id": "r2",
        "overwrite": True,
        "dry_run": True,
        "prompt_column": "q",
        "response_column": "a",
        "teacher_column": "m",
        "prompt_id_column": "qid",
        "correct_column": "ok",
        "select_by": "global",
        "race_epsilon": 0.02,
        "race_delta": 0.05,
        "rank_teachers": True,
        "max_prompts": 20,
        "rank_block": 4,
        "rank_delta": 0.1,
        "seed": 7,
        "min_matched_share": 0.9,
        "actors": 3,
        "gpus_per_actor": 0.5,
        "cpus_per_actor": 2.0,
        "call_tokens": 99,
        "gpu_wait": 1.0,
        "max_response_tokens": 50,
        "no_progress_timeout": 5.0,
        "commit_rows": 7,
        "ray_address": "auto",
        "verbose": True,
        "student": "/other/path",
        "revision": "v2",
        "trust_remote_code": True,
        "windows": (Window(k=2),),
        "segmenter": "line",
        "system_prompt": "Be brief.",
        "device": "cuda:1",
        "dtype": "bfloat16",
        "attn_implementation": "eager",
        "max_tokens": 512,
        "max_window_tokens": 256,
        "batch_tokens": 64,
        "head_chunk": 8,
        "sample_steps": 0.5,
        "max_chars": 10,
        "signals": ("local",),
    }
    options = all_options()
    assert {o.field for o in options} == set(other), "classify the new option here"
    # GPUs, so that a CUDA device is valid; a dtype, so that it does not follow the device
    base = CurateConfig(cache="c", gpus_per_actor=1.0, score=ScoreConfig(dtype="float32"))
    student = StudentIdentity("s", {"w": "a"})
    ns = ScoreCache.of(base, student).namespace()
    resume = run_identity([], base, student)
    for o in options:
        if o.owner is ScoreConfig:
            cfg = replace(base, score=replace(base.score, **{o.field: other[o.field]}))
        else:
            ranking = {"rank_teachers": True} if o.field in ("max_prompts", "rank_block") else {}
            cfg = replace(base, **ranking, **{o.field: other[o.field]})
        kind = o.meta["affects"]
        cache = ScoreCache.of(replace(cfg, cache="c"), student)
        assert (cache.namespace() != ns) == (kind == SCORES), o.key
        assert (run_identity([], cfg, student) != resume) == (kind in (SCORES, ROWS)), o.key


@pytest.mark.parametrize(
    "flags",
    [
        ["--seed", "-1"],
        ["--race-epsilon", "inf"],
        ["--race-delta", "1.5"],
        ["--gpu-wait", "nan"],
        ["--no-progress-timeout", "nan"],
        ["--min-matched-share", "nan"],
        ["--attn-implementation", "flash_attention_2"],  # no GPU asked: CUDA-only kernel
        ["--attn-implementation", "flash_attention_2", "--gpus-per-actor", "1"],  # no package
        ["--signals", "local", "--select-by", "global"],  # a signal it does not compute
        ["--signals", "gn"],
        ["--gpus-per-actor", "2"],  # one whole student per GPU: a second would idle
    ],
)
def test_values_knowable_before_ray_are_one_line_errors(capsys, flags):
    with pytest.raises(SystemExit) as err:
        parse_config(flags)
    lines = capsys.readouterr().err.strip().splitlines()
    assert err.value.code == 2 and len(lines) == 1
    assert flags[0].lstrip("-") in lines[0]


def test_actors_beyond_the_cluster_stop_before_ray_starts(tmp_path, monkeypatch):
    """Actors asking for more CPUs than Ray has would wait forever (SIGTERM did not stop
    it): refused before any work, naming the option."""
    from localnat.curate import job

    monkeypatch.setattr(job, "plan", lambda *a: pytest.fail("planned despite the error"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for flags in (["--cpus-per-actor", "1e9"], ["--actors", "999", "--cpus-per-actor", "0.5"]):
        cfg = parse_config([*flags, "--output", str(tmp_path)])
        with pytest.raises(OptionError, match=r"cpus-per-actor: .* more than the \d+ CPUs"):
            job.run_job(cfg)


def test_a_new_scoring_version_is_a_new_namespace_and_a_new_run(monkeypatch):
    """An upgrade that changes what a number means never reuses a number of the version
    before: not from the cache, not by resuming a run."""
    from localnat.curate.cache import score_cache
    from localnat.curate.run import resume

    cfg = CurateConfig(cache="c")
    student = StudentIdentity("s", {"w": "a"})
    cache = score_cache.ScoreCache.of(cfg, student)
    before = cache.namespace(), run_identity([], cfg, student)
    monkeypatch.setattr(score_cache, "SCORING_VERSION", score_cache.SCORING_VERSION + 1)
    monkeypatch.setattr(resume, "SCORING_VERSION", resume.SCORING_VERSION + 1)
    assert cache.namespace() != before[0]
    assert run_identity([], cfg, student) != before[1]


def test_a_notebook_passes_the_options_by_their_flags_names():
    """`CurateConfig.from_options`: the keys of a config file (dashes or underscores), the
    same config as the flags; a field name that is not an option's is refused by name."""
    from localnat.curate import CurateConfig, run_job

    cfg = CurateConfig.from_options(
        input=["a.parquet", "s3://b/c/"],
        student="s",
        window=[4, 0.25],
        select_by="global",
        **{"call-tokens": 100},
    )
    flags = ["--input", "a.parquet", "--input", "s3://b/c/", "--student", "s", "--window", "4"]
    flags += ["--window", "0.25", "--select-by", "global", "--call-tokens", "100"]
    assert cfg == parse_config(flags) and callable(run_job)
    with pytest.raises(OptionError, match="unknown options \\['inputs'\\]"):
        CurateConfig.from_options(inputs=["a.parquet"])
