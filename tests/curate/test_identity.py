"""The student's identity: every file counts but docs and hidden ones; hashing is memoized
per machine and never hides an edit; hub ids."""

import os

import pytest

from localnat.curate import identity
from localnat.curate.identity import StudentError, identify
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
