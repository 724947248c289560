"""One run per run directory, on any store: a lease file under `_lease/`.

    _lease/<owner>.json   the run that holds the directory now: host, pid, expiry

A run writes its lease, then lists the others; if another live one is there it withdraws.
Two runs starting at once may both withdraw (retry later), never both proceed. It needs no
conditional writes, only a listing that shows a write at once (local files, S3, GCS).

A lease is live while it is renewed (every TTL/4): one not renewed for 2 TTLs (by the store's
modification time) is dead wherever its run was, and an expiry further than one TTL ahead is
not believed (a clock or a version that wrote a day ahead cannot block a retry for a day).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

import pyarrow.fs as pafs

from ...redact import redact
from ..storage import delete, filesystem, join, list_files, read_json, write_text

LEASE_TTL_S = 60.0  # a lease not renewed for this long belongs to a dead run


class RunBusy(RuntimeError):
    """Another live run holds the run directory."""


class Lease:
    """Exclusive hold of a directory (a run's, a cache namespace's), on any store: write
    `_lease/<owner>.json`, then list; if another live lease is there, withdraw. Two runs
    starting at once may both withdraw (retry later), never both proceed. Renewed by a
    thread; released on exit. See the module doc for when a lease is live.

    `exclusive=False` only registers (`readers/` of a cache namespace: who may still read
    what a compaction would delete)."""

    def __init__(
        self, run_dir: str, ttl: float = LEASE_TTL_S, folder: str = "_lease", exclusive=True
    ):
        self.dir = join(run_dir, folder)
        self.ttl, self.exclusive = ttl, exclusive
        self.owner = uuid.uuid4().hex[:16]
        self.uri = join(self.dir, f"{self.owner}.json")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True)

    def _write(self) -> None:
        body = {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires": time.time() + self.ttl,
        }
        write_text(self.uri, json.dumps(body))

    def __enter__(self):
        self._write()
        try:
            for uri in list_files(self.dir) if self.exclusive else ():
                if uri != self.uri:
                    self._check(uri)
        except BaseException:
            _forget(self.uri)  # a start that does not proceed leaves no lease behind
            raise
        self._thread.start()
        return self

    def _check(self, uri: str) -> None:
        """Withdraw (RunBusy) if the lease at `uri` is live; delete it if it is dead."""
        other = live(uri, self.ttl)
        if other is None:
            return
        if other:
            stamp = datetime.fromtimestamp(other["expires"], timezone.utc)
            until = stamp.strftime("%Y-%m-%d %H:%M:%S")
            raise RunBusy(
                f"another run holds {redact(self.dir.rsplit('/', 1)[0])} (host "
                f"{other.get('host')}, pid {other.get('pid')}; its lease {redact(uri)} runs "
                f"until {until} UTC unless renewed): wait for it to finish, or use another "
                f"--run-id; if that run is dead, delete {redact(uri)}, or rerun after "
                f"{int(2 * self.ttl)} s without renewal"
            )
        _forget(uri)  # a dead run's lease

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self._write()
            except Exception:  # noqa: BLE001 - a storage blip; the next renewal retries
                pass

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            _forget(self.uri)
        except Exception:  # noqa: BLE001 - it dies on its own after 2 TTLs
            pass


def live(uri: str, ttl: float = LEASE_TTL_S) -> dict | None:
    """The lease at `uri` if live (its expiry capped at now + ttl), {} if dead, None if gone."""
    renewed = _mtime(uri)
    if renewed is None:
        return None  # released meanwhile
    lease = read_json(uri)
    if not isinstance(lease, dict):  # being written, or cut by a crash: the file's age
        lease = {"host": "?", "pid": "?", "expires": renewed + ttl}
    now = time.time()
    expires = min(float(lease.get("expires") or 0), now + ttl)
    if now - renewed <= 2 * ttl and expires >= now and _running(lease):
        return {**lease, "expires": expires}
    return {}


def holders(directory: str, folder: str, but: str | None = None) -> list[dict]:
    """The live leases (or registrations) under `directory/folder`, but the one at `but`."""
    out = []
    for uri in list_files(join(directory, folder)):
        lease = live(uri) if uri != but else None
        if lease:
            out.append(lease)
    return out


def _mtime(uri: str) -> float | None:
    """When the store last wrote the file; None when it is gone."""
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        return None
    return info.mtime.timestamp() if info.mtime else 0.0


def _forget(uri: str) -> None:
    try:
        delete(uri)
    except FileNotFoundError:
        pass


def _running(lease: dict) -> bool:
    """False when the lease's process is known gone (same host, no such pid)."""
    if lease.get("host") == socket.gethostname() and isinstance(lease.get("pid"), int):
        try:
            os.kill(lease["pid"], 0)
        except ProcessLookupError:
            return False  # killed: its lease is stale at once
        except PermissionError:
            pass
    return True
