"""Credentials never travel in URIs and never reach a text."""

import pytest
from s3server import SECRET_KEY

from localnat.curate.job_config import CurateConfig
from localnat.options import parse_config
from localnat.redact import redact


def test_credentials_in_a_uri_are_refused_without_printing_them(capsys):
    uri = "s3://AKIAFAKEKEY123:SECRETxyz123@data/outc"
    with pytest.raises(SystemExit):
        parse_config(["--output", uri])
    err = capsys.readouterr().err
    assert "credentials inside a URI are not accepted" in err and "environment" in err
    assert "SECRETxyz123" not in err and "AKIAFAKEKEY123" not in err
    # and anything that slips into a message is redacted, with or without a scheme
    text = redact(f"bucket AKIAFAKEKEY123:{SECRET_KEY}@data/outc, {uri}")
    assert SECRET_KEY not in text and "SECRETxyz123" not in text and "AKIAFAKEKEY123" not in text


def test_credentials_whose_secret_holds_a_slash_are_refused_and_redacted():
    uri = "s3://AKIAX:wJal/K7MD/bPxR@bucket/data/"
    with pytest.raises(Exception, match="credentials inside a URI"):
        CurateConfig(inputs=(uri,))
    assert "K7MD" not in redact(f"input not found: {uri}")
    assert CurateConfig(inputs=("s3://bucket/user@example.com/x.jsonl",)).inputs  # a key


def test_redact_removes_keys_and_uri_credentials(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    text = redact("failed s3://AKIA:s3cr3t-value@bucket/x with key s3cr3t-value")
    assert "s3cr3t-value" not in text and "AKIA" not in text and "s3://***@bucket/x" in text
