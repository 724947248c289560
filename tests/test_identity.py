"""A student's identity is every byte that can change a score: the cache never serves a
changed student another's scores, and a resume never mixes two students."""

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file, save_file

from localnat.curate import identity
from localnat.curate.commit import RunMismatch
from localnat.curate.identity import StudentError, identify
from localnat.curate.job import DEMO, run_job
from localnat.curate.storage import read_parquet_dir
from localnat.options import parse_config
from localnat.testing import save_tiny_student

NEW_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


def tensor_span(path: Path, name: str) -> tuple[int, int]:
    """Byte range of one tensor inside a safetensors file (its header gives the offsets)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    start, end = header[name]["data_offsets"]
    return 8 + n + start, 8 + n + end


def sampled_before(size: int) -> list[tuple[int, int]]:
    """The bytes the former fingerprint read of a weight file: 16 slices of 64 KiB."""
    return [(size * i // 16, size * i // 16 + (1 << 16)) for i in range(16)]


def change_one_norm(src: Path, dst: Path) -> str:
    """Copy the student and change one middle layer's layernorm in place (same file size),
    one the former fingerprint never read; returns the tensor's name."""
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    size = weights.stat().st_size
    tensors = load_file(weights)
    for layer in (1, 2, 0, 3):
        name = f"model.layers.{layer}.input_layernorm.weight"
        a, b = tensor_span(weights, name)
        if all(b <= lo or a >= hi for lo, hi in sampled_before(size)):
            break
    else:
        raise AssertionError("every layernorm lies under a sampled slice")
    tensors[name] = tensors[name] * np.float32(1.5)
    save_file(tensors, weights, metadata={"format": "pt"})
    assert weights.stat().st_size == size
    return name


def template_in_tokenizer_config(src: Path, dst: Path, template: str | None = None) -> None:
    """Copy the student with its chat template inside tokenizer_config.json (no .jinja)."""
    shutil.copytree(src, dst)
    jinja = dst / "chat_template.jinja"
    config = json.loads((dst / "tokenizer_config.json").read_text())
    config["chat_template"] = template or jinja.read_text()
    jinja.unlink()
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def config(student, inputs, output, **kw):
    args = ["--student", str(student), "--output", str(output), "--call-tokens", "4000"]
    for key, value in kw.items():
        args += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return parse_config(args + [a for uri in inputs for a in ("--input", str(uri))])


@pytest.fixture(scope="module")
def world(ray_local, tmp_path_factory):
    """A ~10 MB student A and its variants; a cache filled by A and by A with its template in
    tokenizer_config.json (T); each fill a real run."""
    tmp = tmp_path_factory.mktemp("identity")
    a = Path(save_tiny_student(tmp / "a", width=256, layers=4))
    assert 8e6 < (a / "model.safetensors").stat().st_size < 12e6
    students = {"a": a, "t": tmp / "t"}
    template_in_tokenizer_config(a, students["t"])
    students["norm"] = tmp / "norm"
    changed = change_one_norm(a, students["norm"])
    students["jinja"] = tmp / "jinja"
    shutil.copytree(a, students["jinja"])
    (students["jinja"] / "chat_template.jinja").write_text(NEW_TEMPLATE)
    # an edit the probe cannot see (a branch our prompts never take): the bytes alone tell
    students["jinja_branch"] = tmp / "jinja-branch"
    shutil.copytree(a, students["jinja_branch"])
    with open(students["jinja_branch"] / "chat_template.jinja", "a") as f:
        f.write("{% if tools %}[tools] {{ tools }}{% endif %}")
    students["t_edited"] = tmp / "t-edited"
    template_in_tokenizer_config(a, students["t_edited"], NEW_TEMPLATE)
    students["copy"] = tmp / "elsewhere" / "a-copy"
    shutil.copytree(a, students["copy"])
    students["t_copy"] = tmp / "t-copy"
    shutil.copytree(students["t"], students["t_copy"])

    df = pq.read_table(DEMO).to_pandas().head(12)
    df["response"] = df["response"].str.slice(0, 300)
    (tmp / "in").mkdir()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp / "in" / "rows.parquet")
    inputs, cache, out = [tmp / "in"], tmp / "cache", tmp / "out"
    fills = {
        s: run_job(config(students[s], inputs, out, run_id=f"fill-{s}", cache=cache))
        for s in ("a", "t")
    }
    for fill in fills.values():
        assert fill["counts"]["cache_misses"] == len(df)
    return {
        "students": students,
        "changed": changed,
        "rows": len(df),
        "inputs": inputs,
        "cache": cache,
        "out": out,
        "fills": fills,
    }


def hits(world, student: str) -> int:
    """Rows a night with `student` would take from the cache (a dry run: the same identity,
    namespace and lookup as a run, no scoring)."""
    dry = run_job(
        config(
            world["students"][student],
            world["inputs"],
            world["out"],
            cache=world["cache"],
            dry_run=True,
        )
    )
    assert dry["input_rows"] == world["rows"]
    return dry["cache_hits"]


def test_one_changed_layernorm_misses_every_row(world):
    assert world["changed"].startswith("model.layers.")
    night = run_job(
        config(
            world["students"]["norm"],
            world["inputs"],
            world["out"],
            run_id="norm",
            cache=world["cache"],
        )
    )
    c = night["counts"]
    assert c["cache_hits"] == 0 and c["cache_misses"] == world["rows"]
    mine = read_parquet_dir(str(world["out"] / "norm" / "scores")).to_pandas()
    theirs = read_parquet_dir(str(world["out"] / "fill-a" / "scores")).to_pandas()
    both = mine.merge(theirs, on="row_id", suffixes=("", "_a"))
    assert len(both) == world["rows"]
    assert (both["local_nat"] - both["local_nat_a"]).abs().max() > 1e-3  # another student


@pytest.mark.parametrize("edited", ["jinja", "jinja_branch", "t_edited"])
def test_an_edited_chat_template_misses_every_row(world, edited):
    # chat_template.jinja edited (against A's cache), or the template inside
    # tokenizer_config.json edited (against T's)
    assert hits(world, edited) == 0


@pytest.mark.parametrize("copy", ["copy", "t_copy"])
def test_a_byte_copy_at_another_path_hits_every_row(world, copy):
    assert hits(world, copy) == world["rows"]


def test_the_manifest_shows_the_prompt_the_student_saw(world):
    student = world["fills"]["a"]["student"]
    probe = student["prompt_probe"]
    assert probe["rendered"].startswith("<|user|>What is 2+3?") and probe["ids"]
    assert set(student["files"]) >= {"model.safetensors", "chat_template.jinja", "config.json"}


def test_resuming_with_a_changed_student_is_refused_naming_what_changed(world):
    run_dir = world["out"] / "fill-a"
    manifest = run_dir / "manifest.json"
    saved = manifest.read_bytes()
    manifest.unlink()  # an interrupted run
    try:
        for student, what in (("norm", "model.safetensors changed"), ("jinja", "chat_template")):
            cfg = config(world["students"][student], world["inputs"], world["out"], run_id="fill-a")
            with pytest.raises(RunMismatch, match=f"the student: {what}"):
                run_job(cfg)
    finally:
        manifest.write_bytes(saved)


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


# The hashing itself


def test_every_file_counts_but_docs_and_hidden_ones(tmp_path):
    d = tmp_path / "s"
    (d / "additional_chat_templates").mkdir(parents=True)
    (d / ".git").mkdir()
    for name in ("config.json", "model.safetensors", "README.md", "LICENSE", ".gitattributes"):
        (d / name).write_text(name)
    (d / "additional_chat_templates" / "tool.jinja").write_text("{{ x }}")
    (d / ".git" / "HEAD").write_text("ref")
    files = identity.hash_dir(d)
    kept = {"config.json", "model.safetensors", "additional_chat_templates/tool.jinja"}
    assert set(files) == kept
    before = identify(str(d), None, {}).digest
    (d / "README.md").write_text("edited docs")
    assert identify(str(d), None, {}).digest == before
    (d / "additional_chat_templates" / "tool.jinja").write_text("{{ y }}")
    assert identify(str(d), None, {}).digest != before


def test_the_memo_spares_a_rehash_and_never_hides_an_edit(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALNAT_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "s"
    d.mkdir()
    weights = d / "model.safetensors"
    weights.write_bytes(os.urandom(3 * identity.BLOCK // 2))  # two blocks
    (d / "config.json").write_text("{}")
    first = identity.hash_dir(d)
    assert first["model.safetensors"] == identity.hash_files([weights])[0]

    def no_hashing(*args):
        raise AssertionError("hashed again")

    monkeypatch.setattr(identity, "_block", no_hashing)
    assert identity.hash_dir(d) == first  # memoized: nothing read
    monkeypatch.undo()
    monkeypatch.setenv("LOCALNAT_CACHE", str(tmp_path / "cache"))
    # an edit in place that keeps the size and puts the mtime back is still seen (ctime)
    st = weights.stat()
    with open(weights, "r+b") as f:
        f.seek(identity.BLOCK + 5)
        f.write(b"\x00\x01\x02")
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert weights.stat().st_mtime_ns == st.st_mtime_ns
    assert identity.hash_dir(d)["model.safetensors"] != first["model.safetensors"]


def test_a_hub_id_is_its_commit_and_its_files(tmp_path, monkeypatch):
    """A hub id in the local hub cache (offline), laid out as huggingface_hub lays it out."""
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--org--student"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    save_tiny_student(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    student = identify("org/student", None, {})
    assert student.commit == commit
    assert student.files == identity.hash_dir(snapshot)
    (snapshot / "chat_template.jinja").write_text(NEW_TEMPLATE)
    assert identify("org/student", None, {}).digest != student.digest
    with pytest.raises(StudentError, match="cannot identify the student 'org/absent'"):
        identify("org/absent", None, {})


def test_options_declare_what_they_change():
    """Each option's declared class decides the resume identity and the cache namespace:
    a SCORES option changes both, a ROWS option only the resume, the others neither."""
    from dataclasses import replace

    from localnat.curate.cache import namespace
    from localnat.curate.commit import run_identity
    from localnat.curate.config import CurateConfig
    from localnat.curate.identity import StudentIdentity
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
        "race_z": 1.0,
        "seed": 7,
        "min_matched_share": 0.9,
        "actors": 3,
        "gpus_per_actor": 2.0,
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
    }
    options = all_options()
    assert {o.field for o in options} == set(other), "classify the new option here"
    # GPUs, so that a CUDA device is valid; a dtype, so that it does not follow the device
    base = CurateConfig(cache="c", gpus_per_actor=1.0, score=ScoreConfig(dtype="float32"))
    student = StudentIdentity("s", {"w": "a"})
    ns = namespace(base, student)
    resume = run_identity([], base, student)
    for o in options:
        if o.owner is ScoreConfig:
            cfg = replace(base, score=replace(base.score, **{o.field: other[o.field]}))
        else:
            cfg = replace(base, **{o.field: other[o.field]})
        kind = o.meta["affects"]
        assert (namespace(replace(cfg, cache="c"), student) != ns) == (kind == SCORES), o.key
        assert (run_identity([], cfg, student) != resume) == (kind in (SCORES, ROWS)), o.key
