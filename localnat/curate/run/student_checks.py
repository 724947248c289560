"""The student, checked on the driver before any Ray work: it loads (a missing or broken one
is one clear line, not an actor traceback a minute later), it is identified (identity.py),
and the cluster has the GPUs its actors ask for."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

from ...logs import LOG
from ...scoring.config import ScoreConfig
from ..job_config import CurateConfig
from ..settings import Sizing
from .identity import StudentError, StudentIdentity, identify, recall, remember, verify
from .progress import local_cluster

# Model families a teacher's label may name (docs/method.md §7): a student prefers its own
# family's text, so a teacher of it is flagged; the family is found in the student's name,
# else in its config's model_type.
FAMILIES = ("qwen", "llama", "gemma", "phi", "mistral", "deepseek", "smollm", "olmo", "falcon")


def family(name: str, model_type: str | None) -> str | None:
    """The first of FAMILIES the student's name holds, else its model_type's."""
    for text in (name.lower(), (model_type or "").lower()):
        for known in FAMILIES:
            if known in text:
                return known
    return None


def check_student(score: ScoreConfig):
    """Load the student's config and tokenizer here, before any Ray work: a missing or broken
    student is one clear line, not an actor traceback a minute later. Returns the tokenizer
    and the config."""
    from transformers import AutoConfig

    from ...scoring.student import load_tokenizer, resolve_student

    student = resolve_student(score.student)
    try:
        config = AutoConfig.from_pretrained(
            student, revision=score.revision, trust_remote_code=score.trust_remote_code
        )
        return load_tokenizer(score), config
    except Exception as err:  # noqa: BLE001 - any failure to load is the same message
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StudentError(f"cannot load the student {student!r}: {first}") from None


def identify_student(cfg: CurateConfig) -> StudentIdentity:
    """The student identified (identity.py: every file's digest, its real directory or hub
    commit), then loaded from exactly that (`check_student`) to render the prompt probe and
    find its family, and checked again: the probe and the digests are of the same bytes. The
    probe is remembered per machine under the student's digest, the system prompt and the
    versions of the libraries that render it: a night with a known student loads nothing."""
    from ...scoring.student import DEFAULT_STUDENT, prompt_probe, resolve_student

    t = time.time()
    student = identify(resolve_student(cfg.score.student), cfg.score.revision, {})
    name = cfg.score.student or DEFAULT_STUDENT
    memo = _probe_memo(student, name, cfg.score.system_prompt)
    known = _read_probe(memo)
    if known is None:
        tokenizer, config = check_student(student.pinned(cfg.score))
        known = {
            "prompt_probe": prompt_probe(tokenizer, cfg.score.system_prompt),
            "family": family(
                f"{name} {getattr(config, '_name_or_path', '')}",
                getattr(config, "model_type", None),
            ),
        }
        verify(student)
        remember(memo, known)
    student = replace(student, prompt_probe=known["prompt_probe"], family=known["family"])
    LOG.info(f"student {student.name}: identity {student.digest} ({time.time() - t:.1f} s)")
    return student


# What renders a prompt besides the student's files: a new version is a new probe.
RENDERERS = ("transformers", "tokenizers", "jinja2")


def _probe_memo(student: StudentIdentity, name: str, system_prompt: str | None) -> Path:
    from importlib.metadata import PackageNotFoundError, version

    from ...scoring.student import cache_dir

    def known(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    key = [student.digest, name, system_prompt, [known(p) for p in RENDERERS]]
    digest = hashlib.blake2b(json.dumps(key).encode(), digest_size=16).hexdigest()
    return cache_dir() / "probes" / f"{digest}.json"


def _read_probe(path: Path) -> dict | None:
    known = recall(path)
    ok = isinstance(known, dict) and isinstance(known.get("prompt_probe"), dict)
    return known if ok and "family" in known else None


class GpusUnavailable(RuntimeError):
    """The cluster lacks the GPUs --gpus-per-actor asks for (after --gpu-wait, remotely)."""


def wait_for_gpus(sizing: Sizing, poll_s: float = 30.0) -> None:
    """--gpus-per-actor on a cluster without them would wait forever for an actor: fail at
    once on a local cluster; on a remote one (GPU nodes may be autoscaling up) wait up to
    --gpu-wait seconds, saying so."""
    import ray

    if not sizing.gpus_per_actor:
        return
    deadline = time.time() + (0 if local_cluster(sizing) else sizing.gpu_wait)
    while True:
        have = ray.cluster_resources().get("GPU", 0)
        if have >= sizing.gpus_per_actor:
            return
        if time.time() >= deadline:
            raise GpusUnavailable(
                f"--gpus-per-actor {sizing.gpus_per_actor:g}: the Ray cluster has {have:g} GPUs "
                f"(resources: {ray.cluster_resources()}); use --gpus-per-actor 0 for CPU"
            )
        LOG.info(
            f"waiting for GPUs: the cluster has {have:g}, an actor needs {sizing.gpus_per_actor:g}"
        )
        time.sleep(min(poll_s, max(0.0, deadline - time.time())))
