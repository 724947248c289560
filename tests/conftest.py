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
