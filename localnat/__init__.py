"""localnat: local naturalness scoring and selection of multi-teacher reasoning traces.

`localnat.scoring` is the core (no Ray, no I/O); `localnat.curate` is the Ray Data job."""

__version__ = "0.2.0"

__all__ = ["ScoreConfig", "Scorer", "Window", "result_schema", "score_responses", "__version__"]


def __getattr__(name: str):  # lazily, as localnat.scoring: no torch import for a reader
    from importlib import import_module

    scoring = import_module(".scoring", __name__)
    if name not in scoring.__all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(scoring, name)
