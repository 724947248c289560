import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from localnat.testing import tiny_model, tiny_tokenizer  # noqa: E402


@pytest.fixture
def said():
    """The lines the localnat logger says during a test, warnings and up (it does not
    propagate to pytest's capture once a run has set it up)."""
    import logging

    lines: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("localnat").addHandler(handler)
    yield lines
    logging.getLogger("localnat").removeHandler(handler)


@pytest.fixture(scope="session")
def tok():
    return tiny_tokenizer(chat_template=True)


@pytest.fixture(scope="session")
def tok_plain():
    return tiny_tokenizer(chat_template=False)


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def model(request, tok):
    return tiny_model(request.param, len(tok))


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory):
    from localnat.testing import save_tiny_student

    return save_tiny_student(tmp_path_factory.mktemp("student"), "llama")


@pytest.fixture(scope="session")
def ray_local(s3, gcs, tmp_path_factory):
    """A real local Ray head of this session's own (`ray start --head --block` on loopback,
    job server on), which the tests connect to as drivers and submit jobs to. Logical CPUs
    to spare: Ray hangs on 2 CPUs when actors hold them all. Workers inherit the S3
    credentials (and the GCS emulator's address) from the environment, as on a cluster whose
    pods carry them. Stopped through
    its own process group: another Ray on the machine (another suite) is never touched."""
    import os
    import shutil
    import signal
    import subprocess
    import tempfile
    import time
    import urllib.request

    import ray
    from s3server import free_port

    env = {
        **os.environ,
        **s3.env(),
        **gcs.env(),
        "RAY_AUTH_MODE": "disabled",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    os.environ.update(s3.env())
    os.environ.update(gcs.env())
    os.environ["RAY_AUTH_MODE"] = "disabled"
    port, dash = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: socket paths are limited
    log = open(tmp_path_factory.mktemp("ray") / "ray-start.log", "wb")
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=4",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            # its own ports where Ray has fixed defaults: another Ray on the machine holds
            # 52365, and a head whose job agent cannot listen refuses every job submission
            f"--dashboard-agent-listen-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: what teardown stops
    )
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{dash}/api/version", timeout=2)
            break
        except OSError:
            if head.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the Ray head did not start; see {log.name}") from None
            time.sleep(0.5)
    ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
    yield {
        "address": f"127.0.0.1:{port}",
        "dashboard": f"http://127.0.0.1:{dash}",
        "env": env,
        "temp": temp,  # its sessions' logs: session_latest/logs
    }
    ray.shutdown()
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
        try:
            os.killpg(head.pid, sig)
            head.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            break
    try:  # stragglers of the group (workers) after the head has gone
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    log.close()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    from s3server import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    from gcsserver import FakeGCS

    server = FakeGCS(tmp_path_factory.mktemp("gcs")).start()
    yield server
    server.stop()


@pytest.fixture
def s3env(s3, monkeypatch):
    """The S3 server, with its endpoint and credentials in this process's environment."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return s3
