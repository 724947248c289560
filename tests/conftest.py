import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import tiny_model, tiny_tokenizer  # noqa: E402


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
    from tiny import save_tiny_student

    return save_tiny_student(tmp_path_factory.mktemp("student"), "llama")


@pytest.fixture(scope="session")
def ray_local(s3):
    """A real local Ray cluster with logical CPUs to spare (Ray hangs on 2 CPUs when actors
    hold them all). Workers inherit the S3 credentials from the environment, as on a cluster
    whose pods carry them."""
    import os

    import ray

    os.environ.update(s3.env())
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    from s3server import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()
