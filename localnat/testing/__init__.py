"""Helpers for tests, benchmarks and scale runs: random students (`students`) and the job's
real-data fixtures (`jobs`). Random weights: never for real scores."""

from .students import (  # noqa: F401
    CHAT_TEMPLATE,
    CORPUS,
    PROMPTS,
    RESPONSES,
    SAMPLE_DIR,
    STUDENT_SHAPES,
    WINDOWS,
    as_setting,
    sample_tokenizer,
    save_tiny_student,
    scorer,
    shaped_student,
    tiny_model,
    tiny_tokenizer,
)
