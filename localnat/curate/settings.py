"""What each stage and actor of the job takes of its configuration (`CurateConfig`'s
`reading`, `calling`, `sizing` and `choosing`): small, frozen, typed, so that what a part
depends on reads at a glance, and an actor is never handed the whole configuration."""

from __future__ import annotations

from dataclasses import dataclass

from ..scoring.config import ScoreConfig


@dataclass(frozen=True)
class Reading:
    """What reading a row takes, and all the reading functions get: the input columns by
    role (`CurateConfig.columns`), the format, the rows per commit chunk, the column of
    given steps and the longest text a field may hold."""

    columns: dict[str, str]
    input_format: str
    commit_rows: int
    step_column: str | None
    max_chars: int


@dataclass(frozen=True)
class Calling:
    """What the actors take to tokenize, pack and score calls, and all they get besides
    the rows' `Reading`: the scorer's config, the call size, the cap on a response's tokens,
    the scoring actors (a CPU actor's share of the cores), their GPUs and Ray's verbosity."""

    score: ScoreConfig
    call_tokens: int
    max_response_tokens: int | None
    actors: int
    gpus_per_actor: float
    verbose: bool


@dataclass(frozen=True)
class Sizing:
    """Where the job runs and how large: the cluster to join (None: local or RAY_ADDRESS),
    the scoring actors with their CPUs and GPUs, how long to wait for GPUs, Ray Data's
    no-progress timeout and Ray's verbosity; what starting Ray and its checks get."""

    ray_address: str | None
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    gpu_wait: float
    no_progress_timeout: float
    verbose: bool


@dataclass(frozen=True)
class Choosing:
    """What the reduce and the choice take: the choice's settings (`CHOICE`: the signal,
    racing's, the ranking's, the seed, the matched share), whether a correctness column is
    given (then only correct responses are chosen) and the signals computed."""

    select_by: str
    race_epsilon: float
    race_delta: float
    rank_teachers: bool
    max_prompts: int | None
    rank_block: int | None
    rank_delta: float
    seed: int
    min_matched_share: float
    correct_column: str | None
    signals: tuple[str, ...]
