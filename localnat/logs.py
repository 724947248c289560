"""The `localnat` logger: one line per event, `[localnat] ...`, credentials removed, on the
standard output of the driver and of every actor (Ray forwards actors' lines). Quiet by
default: third-party progress bars and Ray's own logs stay out of the terminal unless
`--verbose`."""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import contextmanager

from .redact import redact

LOG = logging.getLogger("localnat")
# Environment a quiet run gives its own process and its Ray workers.
QUIET_ENV = {
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


class _Line(logging.Handler):
    """Writes to the current sys.stdout (a test's capture, a notebook's cell)."""

    def emit(self, record: logging.LogRecord) -> None:
        msg = redact(record.getMessage())
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        sys.stdout.write(f"[localnat] {level}{msg}\n")
        sys.stdout.flush()


def setup(verbose: bool = False) -> None:
    """Once per process: the localnat handler; quiet third parties unless `verbose`."""
    if not any(isinstance(h, _Line) for h in LOG.handlers):
        LOG.addHandler(_Line())
        LOG.setLevel(logging.INFO)
        LOG.propagate = False
    if not verbose:
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
        if "transformers" in sys.modules:  # imported already: its settings, not the env
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()


@contextmanager
def scoped(verbose: bool = False):
    """`setup` for the length of a library call (`run_job` in a notebook): the logger's
    handler, level and propagation, the environment and transformers' verbosity are the
    caller's again afterwards."""
    handlers, level, propagate = list(LOG.handlers), LOG.level, LOG.propagate
    env = {key: os.environ.get(key) for key in QUIET_ENV}
    hf = None
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    setup(verbose)
    try:
        yield
    finally:
        LOG.handlers[:] = handlers
        LOG.setLevel(level)
        LOG.propagate = propagate
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if hf is not None:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity(hf[0])
            (hf_logging.enable_progress_bar if hf[1] else hf_logging.disable_progress_bar)()


# Lines Ray's C++ core writes to the driver's stderr that are not the user's concern: Ray
# Data keeps every actor pool's constructor in the object store, and the core warns about it
# for every pool (ray-project/ray#53727), an `E` line on every run.
NATIVE_NOISE = (b"has constructor arguments in the object store and max_restarts > 0",)


@contextmanager
def native_noise_dropped(verbose: bool = False):
    """While the graph runs (after Ray has started its processes, which must not inherit
    the pipe), the driver's stderr goes through a filter that drops NATIVE_NOISE lines and
    passes every other line on; restored, and the pipe drained, on the way out."""
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def pump():
        with os.fdopen(read, "rb") as src:
            for line in src:
                if not any(noise in line for noise in NATIVE_NOISE):
                    os.write(saved, line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the pump drains it and ends
        thread.join(timeout=5)
        os.close(saved)
