"""The student's identity: every file counts but docs and hidden ones; hashing is memoized
per machine and never hides an edit; hub ids."""

import os

import pytest

from localnat.curate.run import identity
from localnat.curate.run.identity import StudentError, identify
from localnat.testing import save_tiny_student

NEW_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


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


def sharded_student(path):
    """A tiny student saved in shards, the shards in a directory elsewhere linked in as
    `shards/`, and the index naming them there (as its weight_map may)."""
    import json

    from localnat.testing import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    tiny_model("llama", len(tok)).save_pretrained(path, max_shard_size="20KB")
    tok.save_pretrained(path)
    index = path / "model.safetensors.index.json"
    body = json.loads(index.read_text())
    elsewhere = path.parent / f"{path.name}-shards"
    elsewhere.mkdir()
    for name in set(body["weight_map"].values()):
        (path / name).rename(elsewhere / name)
    (path / "shards").symlink_to(elsewhere, target_is_directory=True)
    body["weight_map"] = {k: f"shards/{v}" for k, v in body["weight_map"].items()}
    index.write_text(json.dumps(body))
    return elsewhere


def test_weights_behind_a_symlinked_directory_are_the_students(tmp_path):
    from transformers import AutoModelForCausalLM

    d = tmp_path / "s"
    elsewhere = sharded_student(d)
    shards = sorted(p.name for p in elsewhere.iterdir())
    assert len(shards) > 1
    AutoModelForCausalLM.from_pretrained(d)  # transformers opens them where the index says
    student = identify(str(d), None, {})
    assert {f"shards/{n}" for n in shards} <= set(student.files)
    with open(elsewhere / shards[-1], "r+b") as f:  # a shard changed behind the link
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    assert identify(str(d), None, {}).digest != student.digest
    with pytest.raises(identity.StudentChanged, match=f"shards/{shards[-1]} changed"):
        identity.verify(student)


def test_a_symlinked_student_is_its_real_directory(tmp_path):
    from localnat import ScoreConfig

    real = tmp_path / "v1"
    save_tiny_student(real)
    (tmp_path / "latest").symlink_to(real, target_is_directory=True)
    student = identify(str(tmp_path / "latest"), None, {})
    assert student.root == str(real.resolve())
    pinned = student.pinned(ScoreConfig(student=str(tmp_path / "latest")))
    assert pinned.student == str(real.resolve())  # what the actors load


def test_a_student_that_cannot_be_identified_says_what_is_wrong(tmp_path, monkeypatch):
    d = tmp_path / "s"
    save_tiny_student(d)
    (d / "extra.json").symlink_to(tmp_path / "gone.json")
    with pytest.raises(StudentError, match="extra.json is a broken symlink"):
        identify(str(d), None, {})
    for typo in (str(tmp_path / "modles" / "s"), "./models/s", "~/s"):
        with pytest.raises(StudentError, match="does not exist .a local path"):
            identify(typo, None, {})
    index = tmp_path / "i"
    save_tiny_student(index)
    (index / "model.safetensors.index.json").write_text('{"weight_map": {"w": "absent.bin"}}')
    with pytest.raises(StudentError, match="names 'absent.bin', which is not a file"):
        identify(str(index), None, {})


def test_a_memo_of_another_shape_or_place_costs_a_rehash_and_says_so(tmp_path, monkeypatch, said):
    import json

    monkeypatch.setenv("LOCALNAT_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "s"
    save_tiny_student(d)
    first = identity.hash_dir(d)
    memo = identity._memo_path(d)
    memo.write_text(json.dumps({name: ["another", "shape"] for name in first}))
    assert identity.hash_dir(d) == first  # not a crash on every run of the machine
    memo.write_text("[1, 2]")
    assert identity.hash_dir(d) == first
    (tmp_path / "a-file").write_text("")  # under a file, no directory can be made: not even
    monkeypatch.setenv("LOCALNAT_CACHE", str(tmp_path / "a-file" / "cache"))  # root writes it
    identity._unwritable.clear()
    assert identity.hash_dir(d) == first
    assert identity.hash_dir(d) == first
    assert sum("hashed again on every run" in line for line in said) == 1
