"""Credentials never reach a log, an output or an error message.

Credentials come only from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, HF_TOKEN, ...) or the cloud identity; a URI that carries them is refused
when the config is built (`has_credentials`), and `redact` strips them from any text.
"""

from __future__ import annotations

import os
import re

SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
)
# The one credential pattern: `user[:secret]@` after a scheme (a secret may hold '/', as AWS
# secret keys do), or `key:secret@` where a library dropped the scheme (an S3 "bucket" name
# in an error message). An '@' inside an object key (`s3://b/user@example.com/x`) is neither.
CREDENTIALS = re.compile(
    r"(?:(?<=://)(?:[^/@\s]+|[^@\s/]*:[^@\s]*)|(?<![\w/.-])[^\s/@:'\"]+:[^\s/@'\"]+)@"
)


def has_credentials(uri: str) -> bool:
    return CREDENTIALS.search(uri) is not None


def redact(text: str) -> str:
    """The text without credentials: `user:secret@` in URIs, and the values of SECRET_ENV."""
    text = CREDENTIALS.sub("***@", str(text))
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text
