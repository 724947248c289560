"""One run per run directory, on any store: a lease file under `_lease/`.

    _lease/<owner>.json   the run that holds the directory now: host, pid, expiry

A run writes its lease, then lists the others; if another live one is there it withdraws.
Two runs starting at once may both withdraw (retry later), never both proceed. It needs no
conditional writes, only a listing that shows a write at once (local files, S3, GCS).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from ..redact import redact
from .storage import delete, filesystem, join, list_files, read_json, write_text

LEASE_TTL_S = 60.0  # a lease not renewed for this long belongs to a dead run


class RunBusy(RuntimeError):
    """Another live run holds the run directory."""


class Lease:
    """Exclusive hold of a run directory, on any store: write `_lease/<owner>.json`, then
    list; if another live lease is there, withdraw. Two runs starting at once may both
    withdraw (retry later), never both proceed. Renewed by a thread; released on exit.
    A lease is live until its expiry, or until its process is gone (same host)."""

    def __init__(self, run_dir: str, ttl: float = LEASE_TTL_S):
        self.dir = join(run_dir, "_lease")
        self.ttl = ttl
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
        for uri in list_files(self.dir):
            if uri == self.uri:
                continue
            other = read_json(uri)
            if other is None:  # being written, or left by a crash: live until it is old
                other = {"host": "?", "pid": "?", "expires": _mtime(uri) + self.ttl}
            if _live(other):
                delete(self.uri)
                raise RunBusy(
                    f"another run holds {redact(self.dir.rsplit('/', 1)[0])} (host "
                    f"{other.get('host')}, pid {other.get('pid')}, lease until "
                    f"{time.strftime('%H:%M:%S', time.gmtime(other['expires']))} UTC): wait "
                    "for it to finish, or use another --run-id"
                )
            delete(uri)  # a dead run's lease
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self._write()
            except Exception:  # noqa: BLE001 - a storage blip; the next renewal retries
                pass

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            delete(self.uri)
        except Exception:  # noqa: BLE001 - it expires on its own
            pass


def _mtime(uri: str) -> float:
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    return info.mtime.timestamp() if info.mtime else 0.0


def _live(lease: dict) -> bool:
    if lease.get("expires", 0) < time.time():
        return False
    if lease.get("host") == socket.gethostname() and isinstance(lease.get("pid"), int):
        try:
            os.kill(lease["pid"], 0)
        except ProcessLookupError:
            return False  # killed: its lease is stale at once
        except PermissionError:
            pass
    return True
