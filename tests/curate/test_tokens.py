"""Tokenizing rows: a response over --max-response-tokens is a reject with a reason."""

from localnat import ScoreConfig
from localnat.curate.inputs.records import normalize
from localnat.curate.job_config import CurateConfig
from localnat.testing.jobs import sample


def test_max_response_tokens_rejects_longer_responses_with_a_reason(tiny_student):
    from localnat.curate.run.tokens import Tokenize

    df = sample(300).head(3)
    rows = list(enumerate(df.to_dict("records")))
    table = normalize(rows, "f.parquet", 0, {}, CurateConfig().reading)
    cfg = CurateConfig(score=ScoreConfig(student=tiny_student), max_response_tokens=40)
    out = Tokenize(cfg.score, cfg.max_response_tokens)(table)
    n = [
        len(ids) if ids else 0
        for ids in Tokenize(ScoreConfig(student=tiny_student), None)(table)
        .column("response_ids")
        .to_pylist()
    ]
    reasons = out.column("reject_reason").to_pylist()
    assert any(k > 40 for k in n)
    for k, reason in zip(n, reasons):
        if k > 40:
            assert reason == f"response has {k:,} tokens, over max-response-tokens"
        else:
            assert reason is None
