"""The scoring core: segmenters, window planning, the packed forward, the `Scorer` API.
No Ray, no storage I/O: it scores (prompt, response) pairs with a student (docs/method.md).
Names load on first use: a reader of score tables (a Ray task writing selected/) need not
import torch."""

from importlib import import_module

_WHERE = {
    "ScoreConfig": ".config",
    "Window": ".windows",
    "result_schema": ".schema",
    "Scorer": ".api",
    "score_responses": ".api",
}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_WHERE[name], __name__), name)
