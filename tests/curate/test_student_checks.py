"""The student is checked on the driver before any Ray work."""

import time

import pytest

from localnat import ScoreConfig
from localnat.curate.inputs import InputError
from localnat.curate.student import check_student


def test_a_missing_or_broken_student_is_one_clear_line_before_any_ray_work(tmp_path):
    start = time.time()
    with pytest.raises(InputError, match="cannot load the student") as err:
        check_student(ScoreConfig(student=str(tmp_path / "nope")))
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot load the student"):
        check_student(ScoreConfig(student=str(broken)))
    assert time.time() - start < 30
