"""localnat: local naturalness scoring and selection of multi-teacher reasoning traces."""

from .api import Scorer, result_schema, score_responses
from .config import ScoreConfig, Window

__version__ = "0.1.0"
__all__ = ["ScoreConfig", "Scorer", "Window", "result_schema", "score_responses", "__version__"]
