"""Input rows validated: prompt ids and correctness values are read, never guessed."""

import pytest

from localnat.curate.config import CurateConfig
from localnat.curate.records import normalize


def test_missing_or_nan_prompt_ids_fall_back_to_the_prompt_hash():
    cfg = CurateConfig()
    rows = [
        (0, {"prompt": "A?", "response": "x.", "teacher": "t", "prompt_id": float("nan")}),
        (1, {"prompt": "B?", "response": "y.", "teacher": "t", "prompt_id": float("nan")}),
        (2, {"prompt": "A?", "response": "z.", "teacher": "u", "prompt_id": None}),
        (3, {"prompt": "B?", "response": "w.", "teacher": "u", "prompt_id": " "}),
        (4, {"prompt": "C?", "response": "v.", "teacher": "u", "prompt_id": 7}),
    ]
    ids = normalize(rows, "f.jsonl", 0, {}, cfg).column("prompt_id").to_pylist()
    assert ids[0] == ids[2] != ids[1] == ids[3] and ids[4] == "7"
    assert all(i.startswith("p-") for i in ids[:4]) and "nan" not in ids


def test_correctness_values_are_true_false_or_unknown_never_guessed():
    from localnat.curate.records import as_bool

    ok = (True, False, 1, 0, 1.0, 0.0, "true", " FALSE ", "1", "0", None, float("nan"))
    assert [as_bool(v) for v in ok] == [True, False] * 5 + [None, None]
    for bad in ("yes", "maybe", "", 2, 0.5, "t", [True]):
        with pytest.raises(ValueError, match="use true/false or 1/0"):
            as_bool(bad)
