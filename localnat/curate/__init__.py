"""The curation job: inputs -> validate -> tokenize -> score (Ray actors) -> scores/, rejects/
-> selection, leaderboard, report. Built on `localnat.scoring`.

The notebook API: `from localnat.curate import CurateConfig, run_job` (loaded when first
named: the Ray actors that import this package's stages do not load the job)."""


def __getattr__(name: str):
    if name == "CurateConfig":
        from .job_config import CurateConfig

        return CurateConfig
    if name == "run_job":
        from .job import run_job

        return run_job
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CurateConfig", "run_job"]
