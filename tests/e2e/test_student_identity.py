"""A student's identity is every byte that can change a score: the cache never serves a
changed student another's scores, and a resume never mixes two students."""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file, save_file

from localnat.curate.job import run_job
from localnat.curate.run.identity import StudentChanged
from localnat.curate.run.resume import RunMismatch
from localnat.curate.storage import read_parquet_dir
from localnat.options import parse_config
from localnat.testing import save_tiny_student
from localnat.testing.jobs import DEMO, OnLog

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


def test_a_student_repointed_after_identification_is_not_what_runs(world, tmp_path):
    """`--student latest`, repointed to another model once identified: the actors load
    what was identified (the real directory), so its scores are the identified student's
    and a later night reuses them rightly."""
    latest = tmp_path / "latest"
    latest.symlink_to(world["students"]["a"], target_is_directory=True)

    def repoint():
        latest.unlink()
        latest.symlink_to(world["students"]["norm"], target_is_directory=True)

    cfg = config(latest, world["inputs"], world["out"], run_id="repointed")
    with OnLog(": identity ", repoint) as hook:
        night = run_job(cfg)
    assert hook.done and night["student"]["digest"] == world["fills"]["a"]["student"]["digest"]
    mine = read_parquet_dir(str(world["out"] / "repointed" / "scores")).to_pandas()
    theirs = read_parquet_dir(str(world["out"] / "fill-a" / "scores")).to_pandas()
    both = mine.merge(theirs, on="row_id", suffixes=("", "_a"))
    assert len(both) == world["rows"]
    assert (both["local_nat"] - both["local_nat_a"]).abs().max() < 1e-5  # A's scores


def test_a_student_changed_in_place_after_identification_stops_the_run(world, tmp_path):
    """The same directory, its weights rewritten once identified: every actor checks the
    digests of what it loads, and the run stops naming the file; nothing is cached."""
    moving = tmp_path / "moving"
    shutil.copytree(world["students"]["a"], moving)
    cache = tmp_path / "cache"

    def update_in_place():
        weights = moving / "model.safetensors"
        with open(weights, "r+b") as f:
            f.seek(-64, 2)
            f.write(bytes(64))

    cfg = config(moving, world["inputs"], world["out"], run_id="moving", cache=cache)
    with OnLog(": identity ", update_in_place), pytest.raises(StudentChanged) as err:
        run_job(cfg)
    assert "model.safetensors changed" in str(err.value) and "\n" not in str(err.value)
    parts = [p for p in cache.rglob("parts/*.parquet")]
    assert parts == []  # no score of the changed student under the old identity
