import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from localnat.testing import tiny_model, tiny_tokenizer  # noqa: E402


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
def ray_local(s3, tmp_path_factory):
    """A real local Ray head (`ray start --head` on loopback, job server on), which the tests
    connect to as drivers and submit jobs to. Logical CPUs to spare: Ray hangs on 2 CPUs when
    actors hold them all. Workers inherit the S3 credentials from the environment, as on a
    cluster whose pods carry them."""
    import os
    import subprocess

    import ray
    from s3server import free_port

    env = {
        **os.environ,
        **s3.env(),
        "RAY_AUTH_MODE": "disabled",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    os.environ.update(s3.env())
    os.environ["RAY_AUTH_MODE"] = "disabled"
    port, dash = free_port(), free_port()
    ray_bin = str(Path(sys.executable).parent / "ray")
    subprocess.run(
        [
            ray_bin,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=4",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            "--disable-usage-stats",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
    yield {"address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}", "env": env}
    ray.shutdown()
    subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    from s3server import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()


@pytest.fixture
def s3env(s3, monkeypatch):
    """The S3 server, with its endpoint and credentials in this process's environment."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return s3
