"""localnat: local naturalness scoring and selection of multi-teacher reasoning traces.

`localnat.scoring` is the core (no Ray, no I/O); `localnat.curate` is the Ray Data job."""

__version__ = "0.2.0"

from .scoring import ScoreConfig, Scorer, Window, result_schema, score_responses  # noqa: E402

__all__ = ["ScoreConfig", "Scorer", "Window", "result_schema", "score_responses", "__version__"]
