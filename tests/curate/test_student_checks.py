"""The student is checked on the driver before any Ray work."""

import time

import pytest

from localnat import ScoreConfig
from localnat.curate.job_config import CurateConfig
from localnat.curate.run.identity import StudentError
from localnat.curate.run.student_checks import check_student


def test_a_missing_or_broken_student_is_one_clear_line_before_any_ray_work(tmp_path):
    start = time.time()
    with pytest.raises(StudentError, match="cannot load the student") as err:
        check_student(ScoreConfig(student=str(tmp_path / "nope")))
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(StudentError, match="cannot load the student"):
        check_student(ScoreConfig(student=str(broken)))
    assert time.time() - start < 30


def test_a_known_student_is_not_loaded_again_to_render_its_probe(tmp_path, monkeypatch):
    """The probe is remembered under the student's digest, the system prompt and the
    renderers' versions: a night with a known student loads no tokenizer; a new system
    prompt, or changed files, renders it again."""
    from localnat.curate.run import student_checks as students
    from localnat.testing import save_tiny_student

    monkeypatch.setenv("LOCALNAT_CACHE", str(tmp_path / "cache"))
    path = save_tiny_student(tmp_path / "s")
    cfg = CurateConfig(score=ScoreConfig(student=path))
    first = students.identify_student(cfg)
    assert first.prompt_probe["rendered"].startswith("<|user|>What is 2+3?")
    real = students.check_student
    monkeypatch.setattr(students, "check_student", lambda score: pytest.fail("loaded again"))
    again = students.identify_student(cfg)
    assert (again.prompt_probe, again.family) == (first.prompt_probe, first.family)
    monkeypatch.setattr(students, "check_student", real)
    told = students.identify_student(
        CurateConfig(score=ScoreConfig(student=path, system_prompt="Be brief."))
    )
    assert told.prompt_probe["rendered"].startswith("<|system|>Be brief.")
    (tmp_path / "s" / "chat_template.jinja").write_text("{{ messages[0]['content'] }}!")
    assert students.identify_student(cfg).prompt_probe["rendered"] == "What is 2+3?!"


def test_reading_tasks_fit_a_small_machine(monkeypatch):
    from localnat.curate.run.progress import reading_tasks

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    two = CurateConfig(actors=2).resolved().sizing
    assert reading_tasks(two) == 1  # two cores, two scoring actors
    assert reading_tasks(CurateConfig(actors=1, cpus_per_actor=1.0).resolved().sizing) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    assert reading_tasks(CurateConfig(actors=2).resolved().sizing) == 4  # two per scoring actor
    assert reading_tasks(CurateConfig(actors=2, ray_address="auto").resolved().sizing) == 4
