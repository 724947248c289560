"""The curation job's typed configuration: where data comes from and goes, columns,
selection, Ray sizing; plus the scorer's `ScoreConfig`. Policies that depend on several
options (CPU device without GPUs, the CPUs an actor reserves) are resolved here, so the API,
the CLI, config files and `ray job submit` behave the same."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..fields import CHOICE, ROWS, OptionError, check_fields, declared, flag_name, option
from ..redact import has_credentials, redact
from ..scoring.config import ScoreConfig
from .inputs.formats import FORMATS
from .settings import Calling, Choosing, Reading, Sizing
from .signals import SIGNALS

DEMO = Path(__file__).parent.parent / "sample" / "demo_gsm8k.parquet"  # the first run

# One path segment: never '.', '..', a separator or a control character.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_IO, _COLS, _SEL, _RAY = "input and output", "columns", "selection", "ray"


@dataclass(frozen=True)
class CurateConfig:
    """The curation job (README "Options"); see each field's help."""

    inputs: tuple[str, ...] = option(
        (),
        "file, directory or glob; local, `s3://`, `gs://`; Parquet, Arrow IPC / Feather, JSONL "
        "(gzipped or not), a JSON array; repeatable. Hive directories "
        "(`teacher=qwq/part-0.parquet`) supply columns",
        group=_IO,
        flag="input",
        default_text="bundled demo slice",
        metavar="URI",
    )
    input_format: str = option(
        "auto",
        "`parquet`, `arrow` (Arrow IPC / Feather) or `jsonl` (`auto`: by extension)",
        group=_IO,
        affects=ROWS,
        choices=FORMATS,
    )
    output: str = option(
        "./localnat-out",
        "a run writes under `OUTPUT/RUN_ID/`; `{date}` becomes the UTC date",
        group=_IO,
        metavar="URI",
    )
    cache: str | None = option(
        None,
        "score cache: rows scored before with the same student and settings are reused, "
        "not rescored; shareable by runs (local, `s3://` or `gs://`)",
        group=_IO,
        default_text="none",
        metavar="URI",
    )
    run_id: str | None = option(
        None,
        "one path segment (letters, digits, `.`, `_`, `-`); reuse one to resume that run",
        group=_IO,
        default_text="UTC timestamp",
    )
    overwrite: bool = option(
        False,
        "redo a run whose manifest says it is complete (deletes only that run's "
        "directory, and only when it holds localnat's `_run.json`)",
        group=_IO,
    )
    dry_run: bool = option(
        False, "list input files, row counts and the plan; load no student", group=_IO
    )
    prompt_column: str = option("prompt", "input column with the prompt", group=_COLS, affects=ROWS)
    response_column: str = option(
        "response", "input column with the response", group=_COLS, affects=ROWS
    )
    teacher_column: str = option(
        "teacher", "input column naming the teacher", group=_COLS, affects=ROWS
    )
    prompt_id_column: str = option(
        "prompt_id",
        "used when present and not null, else a hash of the prompt text",
        group=_COLS,
        affects=ROWS,
    )
    correct_column: str | None = option(
        None,
        "correctness column (true/false, yes/no or 1/0; null for unknown); then only correct "
        "responses are selected and accuracy is reported",
        group=_COLS,
        affects=ROWS,
    )
    select_by: str = option(
        "local",
        "the signal that chooses each prompt's response: `local` (LN), `global`, `rsr` "
        "(lowest), `entropy` (lowest), `local_nofirst`, `global_nofirst`, `length` "
        "(longest), or `random` (seeded); all through the same code path (docs/method.md §8)",
        group=_SEL,
        choices=(*SIGNALS, "random"),
        affects=CHOICE,
    )
    race_epsilon: float = option(
        0.0,
        "with --sample-steps and --select-by local: racing stops once each prompt's choice is "
        "within this many nats per token of its best candidate's exact LN (0: the best), "
        "with probability 1 - --race-delta (docs/method.md §5.2)",
        group=_SEL,
        metavar="E",
        affects=CHOICE,
    )
    race_delta: float = option(
        0.01,
        "racing's error probability per prompt, over all its candidates and rounds",
        group=_SEL,
        metavar="D",
        affects=CHOICE,
    )
    rank_teachers: bool = option(
        False,
        "teacher ranking that stops: score prompts in a seeded order, in blocks holding all "
        "their teachers, until the top teacher by --select-by is ahead of every other with "
        "probability 1 - --rank-delta, or --max-prompts; writes the leaderboard, no "
        "selected/ (docs/method.md §7.2)",
        group=_SEL,
        affects=CHOICE,
    )
    max_prompts: int | None = option(
        None,
        "with --rank-teachers: the most prompts it scores",
        group=_SEL,
        default_text="all",
        affects=CHOICE,
    )
    rank_block: int | None = option(
        None,
        "with --rank-teachers: prompts per block; the ranking is tested after each",
        group=_SEL,
        default_text="2% of the prompts, at least 5",
        affects=CHOICE,
    )
    rank_delta: float = option(
        0.05,
        "with --rank-teachers: the probability that the stop names a top teacher other than "
        "the one over every prompt, every block's test together",
        group=_SEL,
        metavar="D",
        affects=CHOICE,
    )
    seed: int = option(
        0, "bootstrap, random selection and the ranking's prompt order", group=_SEL, affects=CHOICE
    )
    min_matched_share: float = option(
        0.5,
        "teachers are left out of the ranking (listed apart) until the prompts every ranked "
        "teacher answered are at least this share of all prompts (docs/method.md §7)",
        group=_SEL,
        affects=CHOICE,
    )
    actors: int = option(1, "scoring actors, one student each", group=_RAY)
    gpus_per_actor: float = option(
        0.0,
        "1 per GPU; 0.5 packs two small students per GPU; at most 1 (one whole student per "
        "GPU: README 'Big students')",
        group=_RAY,
    )
    cpus_per_actor: float | None = option(
        None,
        "CPUs each scoring actor reserves (keep some free for reading and tokenizing)",
        group=_RAY,
        default_text="1 with GPUs, 0.5 without",
    )
    call_tokens: int | None = option(
        None,
        "estimated model tokens per scoring call: the work of one actor call is bounded by "
        "tokens, not rows (a longer response goes alone)",
        group=_RAY,
        default_text="8192 without GPUs (about 20 s of a 135M student on 2 cores), 1000000 with",
    )
    gpu_wait: float = option(
        600.0,
        "seconds to wait for GPUs on a remote cluster (autoscaling); a local one fails at once",
        group=_RAY,
    )
    max_response_tokens: int | None = option(
        None,
        "reject longer responses with a reason instead of scoring them (a bound on the cost "
        "of the longest rows; exact scores either way)",
        group=_SEL,
        affects=ROWS,
    )
    no_progress_timeout: float = option(
        0.0,
        "seconds Ray Data may go without finishing a task before it fails the run; 0 = never "
        "(one long call, a 100k-token trace, is progress too)",
        group=_RAY,
    )
    commit_rows: int = option(
        1000,
        "rows of one input file committed together: a killed run keeps every chunk it "
        "finished, so large files resume where they stopped",
        group=_IO,
        affects=ROWS,
    )
    ray_address: str | None = option(
        None, "the cluster to join", group=_RAY, default_text="local or `RAY_ADDRESS`"
    )
    verbose: bool = option(
        False,
        "show Ray's own progress logs and worker output (else they stay in Ray's logs)",
        group=_RAY,
    )
    score: ScoreConfig = ScoreConfig()

    def __post_init__(self):
        check_fields(self)
        if not isinstance(self.score, ScoreConfig):
            raise OptionError(f"score: expected a ScoreConfig, got {type(self.score).__name__}")
        if self.actors < 1 or self.commit_rows < 1:
            raise OptionError("actors and commit-rows: must be >= 1")
        if self.seed < 0:
            raise OptionError(f"seed: must be >= 0, got {self.seed}")
        if self.race_epsilon < 0 or not 0 < self.race_delta < 1:
            raise OptionError("race-epsilon: must be >= 0; race-delta: in (0, 1)")
        self._check_ranking()
        if not 0 <= self.min_matched_share <= 1:
            raise OptionError("min-matched-share: must be in [0, 1]")
        if self.gpus_per_actor < 0:
            raise OptionError("gpus-per-actor: must be >= 0")
        if self.gpus_per_actor > 1:
            raise OptionError(
                f"gpus-per-actor: {self.gpus_per_actor:g} would hold GPUs the student never "
                "uses: an actor loads one whole student on one GPU (a split over GPUs is not "
                "built). Use 1 (a student that fits one GPU with --batch-tokens: README "
                "'Big students'), or 0.5 to pack two small ones"
            )
        if self.max_response_tokens is not None and self.max_response_tokens < 1:
            raise OptionError("max-response-tokens: must be >= 1")
        if self.no_progress_timeout < 0 or self.gpu_wait < 0:
            raise OptionError("no-progress-timeout, gpu-wait: must be >= 0")
        if self.call_tokens is not None and self.call_tokens < 1:
            raise OptionError("call-tokens: must be >= 1")
        if self.cpus_per_actor is not None and self.cpus_per_actor <= 0:
            raise OptionError("cpus-per-actor: must be > 0")
        if self.gpus_per_actor == 0 and self.score.device.startswith("cuda"):
            raise OptionError(
                f"device: {self.score.device} needs GPUs, and the actors get none "
                "(--gpus-per-actor 0); set --gpus-per-actor, or --device cpu"
            )
        if self.run_id is not None and not _SAFE_ID.fullmatch(self.run_id):
            raise OptionError(
                f"run-id: one path segment of letters, digits, '.', '_', '-' that starts with "
                f"a letter or digit, got {self.run_id!r}"
            )
        self._check_uris()
        if self.select_by not in (*self.score.signals, "length", "random"):
            raise OptionError(
                f"select-by: {self.select_by} is not among the signals computed "
                f"(--signals {','.join(self.score.signals)}); add it, or select by one of them"
            )
        if self.score.step_column and self.score.step_column in self.columns.values():
            raise OptionError("segmenter: the step column must differ from the other columns")

    @classmethod
    def from_options(cls, **options) -> CurateConfig:
        """The config from options named as the flags and a config file name them (`input=
        [...]`, `student=...`, `window=[4, 0.25]`; dashes or underscores), typed and
        validated once, as the CLI's are."""
        owners = {
            flag_name(f): (owner, f.name)
            for owner in (cls, ScoreConfig)
            for f in fields(owner)
            if "help" in f.metadata
        }
        given = {key.replace("_", "-"): value for key, value in options.items()}
        unknown = sorted(set(given) - set(owners))
        if unknown:
            raise OptionError(f"unknown options {unknown}; known: {sorted(owners)}")
        kwargs: dict[type, dict] = {cls: {}, ScoreConfig: {}}
        for key, value in given.items():
            if isinstance(value, (list, tuple)) and not value:
                raise OptionError(f"{key}: an empty list (leave the option out for its default)")
            owner, name = owners[key]
            kwargs[owner][name] = value
        return cls(**kwargs[cls], score=ScoreConfig(**kwargs[ScoreConfig]))

    def _check_uris(self) -> None:
        if any(not uri.strip() for uri in self.inputs):
            raise OptionError("input: an empty URI")
        if not self.output.strip():
            raise OptionError("output: an empty URI")
        uris = [("input", u) for u in self.inputs] + [("output", self.output)]
        if self.cache is not None:
            if not self.cache.strip():
                raise OptionError("cache: an empty URI")
            uris.append(("cache", self.cache))
        for key, uri in uris:
            if has_credentials(uri):
                raise OptionError(
                    f"{key}: credentials inside a URI are not accepted ({redact(uri)}); set "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the cloud identity) in the "
                    "environment instead"
                )

    def _check_ranking(self) -> None:
        if not self.rank_teachers:
            if self.max_prompts is not None or self.rank_block is not None:
                raise OptionError("max-prompts, rank-block: only with --rank-teachers")
            return
        if any(v is not None and v < 1 for v in (self.max_prompts, self.rank_block)):
            raise OptionError("max-prompts, rank-block: must be >= 1")
        if not 0 < self.rank_delta < 1:
            raise OptionError("rank-delta: must be in (0, 1)")
        if self.race_epsilon:
            raise OptionError(
                "race-epsilon: racing chooses each prompt's response, and --rank-teachers "
                "chooses none (it ranks teachers); leave one out"
            )
        if self.select_by == "random":
            raise OptionError("select-by random ranks nothing: rank by a signal (--rank-teachers)")

    def resolved(self) -> CurateConfig:
        """The configuration a run uses, every default a policy decides decided once, before
        Ray starts (the CLI, a config file and a notebook all come through `run_job`): the
        bundled demo slice, graded, when no input is given; the call size and the actors'
        CPUs from whether they get GPUs; the CPU for actors without a GPU (they must not
        grab one Ray did not give them)."""
        gpu, demo = self.gpus_per_actor > 0, not self.inputs
        score, decided = self.score, {}
        if not gpu and score.device == "auto":
            decided["score"] = replace(score, device="cpu")
        if demo:
            decided["inputs"] = (str(DEMO),)
            if self.correct_column is None:
                decided["correct_column"] = "is_correct"
        if self.call_tokens is None:
            decided["call_tokens"] = 1_000_000 if gpu else 8192
        if self.cpus_per_actor is None:
            decided["cpus_per_actor"] = 1.0 if gpu else 0.5
        return replace(self, **decided)

    def settings(self, *kinds: str) -> dict:
        """The options declared to change `kinds` (SCORES, ROWS, CHOICE), the job's and the
        scorer's, with dtype `auto` resolved as the actors resolve it (bf16 on CUDA, fp32 on
        CPU)."""
        out = {**declared(self, kinds), **declared(self.score, kinds)}
        if out.get("dtype") == "auto":
            cuda = self.gpus_per_actor > 0 or self.score.device.startswith("cuda")
            out["dtype"] = "bfloat16" if cuda else "float32"
        return out

    @property
    def reading(self) -> Reading:
        return Reading(
            self.columns,
            self.input_format,
            self.commit_rows,
            self.score.step_column,
            self.score.max_chars,
        )

    @property
    def calling(self) -> Calling:
        """Of a `resolved` config (the call size is decided there)."""
        assert self.call_tokens is not None, "calling: resolve the config first"
        return self._named(Calling)

    @property
    def sizing(self) -> Sizing:
        """Of a `resolved` config (the actors' CPUs are decided there)."""
        assert self.cpus_per_actor is not None, "sizing: resolve the config first"
        return self._named(Sizing)

    def _named(self, settings: type):
        """`settings` (a dataclass) of this config's values of its fields' names."""
        return settings(**{f.name: getattr(self, f.name) for f in fields(settings)})

    @property
    def choosing(self) -> Choosing:
        return Choosing(
            **self.settings(CHOICE), correct_column=self.correct_column, signals=self.score.signals
        )

    @property
    def columns(self) -> dict[str, str]:
        """Role -> input column name (the correctness column only when configured)."""
        cols = {
            "prompt": self.prompt_column,
            "response": self.response_column,
            "teacher": self.teacher_column,
            "prompt_id": self.prompt_id_column,
        }
        if self.correct_column:
            cols["is_correct"] = self.correct_column
        return cols
