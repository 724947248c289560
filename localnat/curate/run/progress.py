"""The run a person watches: one localnat progress line about every 10 s, and Ray's own
progress logs kept out of the terminal unless `--verbose` (they stay in the Ray session's
logs, `ray-data.log`)."""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ...fields import OptionError
from ...logs import QUIET_ENV
from ..settings import Sizing


class Terminated(BaseException):
    """SIGTERM (a scheduler stopping the job): unwind, release the lease, exit resumable.
    A BaseException so that no `except Exception` on the way swallows it."""


_state = {"critical": 0, "pending": False}


def _on_sigterm(signum, frame):
    if _state["critical"]:
        _state["pending"] = True  # raised when the commit in progress is written
        return
    raise Terminated()


@contextmanager
def uninterrupted():
    """A commit (a marker write) finishes before SIGTERM unwinds the run."""
    _state["critical"] += 1
    try:
        yield
    finally:
        _state["critical"] -= 1
        if not _state["critical"] and _state["pending"]:
            _state["pending"] = False
            raise Terminated()


def local_cluster(sizing: Sizing) -> bool:
    """Whether the job starts its own Ray (no --ray-address, no RAY_ADDRESS)."""
    return sizing.ray_address is None and not os.environ.get("RAY_ADDRESS")


def local_cpus() -> int:
    """Logical CPUs of the Ray the job starts: room to spare on small machines, where Ray
    hangs when actors hold every CPU."""
    return max(4, os.cpu_count() or 1)


# What runs beside the scoring actors and needs a CPU share: one reading task at least
READING_CPUS = 0.5


def reading_tasks(sizing: Sizing) -> int:
    """The most reading (`pack`) tasks at once: two per scoring actor, but on the machine
    of a local Ray no more than its cores left to the scoring actors (a process's first
    loads a tokenizer, seconds of a core that small machines cannot spare)."""
    most = max(2, 2 * sizing.actors)
    if not local_cluster(sizing):
        return most
    return max(1, min(most, (os.cpu_count() or 1) - int(sizing.actors * sizing.cpus_per_actor)))


def check_cpus(sizing: Sizing) -> None:
    """Scoring actors that ask for more CPUs than the Ray they run on has would wait
    forever: a one-line error before Ray starts (the Ray this job starts, or the one this
    process already joined; a remote cluster may still grow, and is not checked)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        have, where = ray.cluster_resources().get("CPU", 0), "the Ray cluster joined"
    elif local_cluster(sizing):
        have, where = local_cpus(), "the local Ray this job starts"
    else:
        return
    need = sizing.actors * sizing.cpus_per_actor + READING_CPUS
    if need > have:
        raise OptionError(
            f"cpus-per-actor: {sizing.actors} actors x {sizing.cpus_per_actor:g} CPUs "
            f"(+{READING_CPUS:g} for reading) is more than the {have:g} CPUs of {where}; "
            "lower --cpus-per-actor or --actors, or join a larger cluster (--ray-address)"
        )


def start_ray(sizing: Sizing) -> None:
    """Join the configured cluster, or start a local one, quietly unless verbose."""
    import ray
    from ray.data import DataContext

    quiet = not sizing.verbose
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = not quiet
    ctx.print_on_execution_start = not quiet
    # Off (-1) by default: one long call (a 100k-token trace) is progress too.
    ctx.execution_no_progress_timeout_s = sizing.no_progress_timeout or -1
    # Start scoring once every student is loaded, so the first calls spread over all of
    # them instead of queueing on the first one up (an hour: a student that cannot load in
    # that time is a broken cluster, and the error says so).
    ctx.wait_for_min_actors_s = 3600
    if quiet:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    # a local Ray needs no dashboard (its seconds of start-up on every run are saved)
    extra = {"num_cpus": local_cpus(), "include_dashboard": False} if local_cluster(sizing) else {}
    env = dict(QUIET_ENV) if quiet else {}
    ray.init(
        address=sizing.ray_address,
        log_to_driver=True,  # worker errors must reach the user
        logging_level=logging.WARNING if quiet else logging.INFO,
        runtime_env={"env_vars": env} if env else None,
        **extra,
    )
    if threading.current_thread() is threading.main_thread():
        # After ray.init, which installs its own handler: ours unwinds cleanly instead.
        signal.signal(signal.SIGTERM, _on_sigterm)


# How long a stream left early may take to stop and end before the driver goes on leaving
# (a thread waiting for actors Ray cannot place never ends; a scheduler's grace is ~30 s)
STOP_WAIT_S = 10


@contextmanager
def interruptible(items: Iterator, stop: Callable[[], bool]) -> Iterator[Iterator]:
    """`items`, pulled in a thread of their own: the calling thread waits in short steps, so
    SIGTERM (whose handler Python runs only in the main thread, between its own steps) is
    heard at once, where Ray waiting in its C++ core (for actors it cannot place) would hold
    it off for an hour. An error in the pulling thread is raised here.

    Left early (SIGTERM, an error), `stop()` ends what the thread waits on (-> whether it
    could; asked again until it can) and the thread is waited for: a thread still inside
    Ray when the driver leaves Ray ends the whole process with status 1 (Ray's core worker
    exits on any call after its shutdown), and a scheduler would read a clean, resumable
    stop as a failure."""
    handoff: queue.Queue = queue.Queue(maxsize=2)
    end = object()

    def pull() -> None:
        try:
            for item in items:
                handoff.put(item)
            handoff.put(end)
        except BaseException as err:  # noqa: BLE001 - handed over, raised by the caller
            handoff.put(err)

    def received() -> Iterator:
        while True:
            try:
                item = handoff.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    thread = threading.Thread(target=pull, daemon=True, name="localnat-pull")
    thread.start()
    try:
        yield received()
    finally:
        # until the stream is stopped (its execution may not have started yet) and ends
        deadline, stopped = time.monotonic() + STOP_WAIT_S, False
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                stopped = stopped or stop()
            except Exception:  # noqa: BLE001 - the error that made the run leave is raised
                stopped = True
            try:  # room for the thread's last put
                handoff.get(timeout=0.1)
            except queue.Empty:
                pass


def unwrapped(err: BaseException) -> BaseException:
    """localnat's own error raised in a Ray task or actor, as it was raised and in its first
    line (Ray wraps it, and Ray Data appends its own advice); any other error as it is."""
    cause = getattr(err, "cause", None)
    if type(cause).__module__.startswith("localnat."):
        return type(cause)(str(cause).split("\n", 1)[0])
    return err


class Progress:
    """Counters the driver updates as parts are written; a thread prints them every
    `every` seconds: files done/total, rows scored/reused/rejected, response tokens/s, ETA."""

    def __init__(self, files: int, rows: int | None, log, every: float = 10.0, exact=True):
        self.files, self.rows, self.log, self.every = files, rows, log, every
        self.exact = exact  # rows counted, or estimated (JSONL: lines per byte)
        self.done_files = self.scored = self.rejected = self.tokens = self.reused = 0
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=1)

    def add(self, scored: int, rejected: int, tokens: int, reused: int = 0) -> None:
        self.scored += scored
        self.rejected += rejected
        self.tokens += tokens
        self.reused += reused

    def line(self) -> str:
        elapsed = max(time.time() - self.started, 1e-9)
        done = self.scored + self.rejected
        about = "" if self.exact else "~"
        rows = f"{done:,}" + (f"/{about}{self.rows:,}" if self.rows else "")
        eta = "?"
        if self.rows and done:
            eta = f"{about}{max(self.rows - done, 0) * elapsed / done:,.0f} s"
        elif self.done_files:
            eta = f"{(self.files - self.done_files) * elapsed / self.done_files:,.0f} s"
        return (
            f"progress: files {self.done_files}/{self.files}, rows {rows} "
            f"({self.scored - self.reused:,} scored, {self.reused:,} reused, "
            f"{self.rejected:,} rejected), "
            f"{self.tokens / elapsed:,.1f} response tokens/s, {elapsed:,.0f} s elapsed, ETA {eta}"
        )

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.log(self.line())
