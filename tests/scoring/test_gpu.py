"""The CUDA path against the CPU reference. Runs only where a GPU is present (the CI machines
have none; `python -m jobs.benchmark --device cuda --dtype bfloat16 --student-shape qwen2.5-1.5b` is
the throughput check)."""

import pytest
import torch

from localnat.scoring.reference import reference_scores
from localnat.testing import PROMPTS, RESPONSES, WINDOWS, scorer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_cuda_matches_the_cpu_reference(model, tok, dtype, tol):
    gpu_model = type(model)(model.config).to("cuda", dtype).eval()
    gpu_model.load_state_dict(model.state_dict())
    rows = scorer(gpu_model, tok, batch_tokens=64).score(PROMPTS, RESPONSES).to_pylist()
    for row, p, y in zip(rows, PROMPTS, RESPONSES):
        gn, ln, _ = reference_scores(model, tok, p, y, WINDOWS)
        assert abs(row["global_nat"] - gn) < tol
        assert abs(row["local_nat"] - ln[WINDOWS[0]]) < tol
