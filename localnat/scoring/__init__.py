"""The scoring core: segmenters, window planning, the packed forward, the `Scorer` API.
No Ray, no storage I/O: it scores (prompt, response) pairs with a student (docs/method.md)."""

from .api import Scorer, result_schema, score_responses
from .config import ScoreConfig, Window

__all__ = ["ScoreConfig", "Scorer", "Window", "result_schema", "score_responses"]
