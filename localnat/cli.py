"""`localnat curate ...` and `python -m jobs.curate ...`: one parser, one config object.

A config file (YAML or TOML, `--config`) holds the same options as the flags, with dashes or
underscores (`batch-tokens: 8192`); flags given on the command line win over the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import SEGMENTERS, CurateConfig, ScoreConfig

SELECT_BY = ("local", "global", "random")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="localnat curate",
        description="Score multi-teacher reasoning traces with a student's local naturalness, "
        "rank the teachers and keep the best response per prompt.",
    )
    p.add_argument("--config", help="YAML or TOML file whose keys mirror these flags")
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--input",
        action="append",
        metavar="URI",
        help="file, directory or glob (local, s3://, gs://); Parquet or JSONL(.gz); "
        "repeatable. Default: the bundled sample",
    )
    io.add_argument("--input-format", choices=("auto", "parquet", "jsonl"), default="auto")
    io.add_argument(
        "--output",
        default="./localnat-out",
        help="output URI; a run writes under OUTPUT/RUN_ID/ ({date} is filled in)",
    )
    io.add_argument("--run-id", help="default: a UTC timestamp; reuse one to resume a run")
    io.add_argument(
        "--overwrite", action="store_true", help="redo a run id whose manifest says it is complete"
    )
    io.add_argument(
        "--dry-run",
        action="store_true",
        help="list input files, row counts and the plan; load no student",
    )
    cols = p.add_argument_group("columns")
    cols.add_argument("--prompt-column", default="prompt")
    cols.add_argument("--response-column", default="response")
    cols.add_argument("--teacher-column", default="teacher")
    cols.add_argument(
        "--prompt-id-column",
        default="prompt_id",
        help="used when present; otherwise a hash of the prompt text",
    )
    cols.add_argument(
        "--correct-column", default=None, help="boolean column; only correct responses are selected"
    )
    sc = p.add_argument_group("scoring")
    sc.add_argument("--student", help="model directory or hub id (default: offline SmolLM2-135M)")
    sc.add_argument("--revision", help="model revision for hub ids")
    sc.add_argument("--trust-remote-code", action="store_true")
    sc.add_argument(
        "--window",
        action="append",
        metavar="K|W",
        help="window setting, repeatable: 4 (steps) or 0.25 (fraction); default 4",
    )
    sc.add_argument(
        "--segmenter", default="sentence", help=f"{', '.join(SEGMENTERS)} or column:NAME"
    )
    sc.add_argument("--system-prompt")
    sc.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    sc.add_argument("--device", default="auto", help="auto, cpu or cuda")
    sc.add_argument(
        "--attn-implementation",
        help="sdpa (default) or flash_attention_2 (opt-in; "
        "check it with jobs.benchmark on your GPU)",
    )
    sc.add_argument("--max-tokens", type=int, help="global-pass cap (default: model context)")
    sc.add_argument("--max-window-tokens", type=int, help="one window's cap (default 4096)")
    sc.add_argument("--batch-tokens", type=int, help="padded tokens per forward")
    sc.add_argument(
        "--max-chars", type=int, default=1_000_000, help="longer prompts/responses are rejected"
    )
    sel = p.add_argument_group("selection")
    sel.add_argument("--select-by", choices=SELECT_BY, default="local")
    sel.add_argument("--seed", type=int, default=0, help="bootstrap and random selection")
    ray = p.add_argument_group("ray")
    ray.add_argument("--actors", type=int, default=1, help="scoring actors (students)")
    ray.add_argument("--gpus-per-actor", type=float, default=0.0)
    ray.add_argument(
        "--cpus-per-actor",
        type=float,
        default=None,
        help="default 1 with GPUs, 0.5 without (leaves CPUs for reading)",
    )
    ray.add_argument("--batch-rows", type=int, default=64, help="rows per actor call")
    ray.add_argument("--ray-address", help="default: an existing cluster or a local one")
    return p


def _read_config_file(path: str) -> dict:
    text = Path(path).read_text()
    if path.endswith(".toml"):
        import tomllib

        data = tomllib.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"error: {path}: expected a mapping of options")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def parse_config(argv: list[str] | None = None) -> CurateConfig:
    """Flags (and the config file they name) -> a validated CurateConfig."""
    parser = build_parser()
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        values = _read_config_file(pre.config)
        known = {a.dest for a in parser._actions} - {"help", "config"}
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"unknown keys in {pre.config}: {unknown}; known: {sorted(known)}")
        for key in ("input", "window"):  # lists in the file, appendable flags on the CLI
            if key in values and not isinstance(values[key], list):
                values[key] = [values[key]]
        parser.set_defaults(**values)
    args = parser.parse_args(argv)
    try:
        return config_from_args(args)
    except ValueError as err:
        parser.error(str(err))


def config_from_args(args: argparse.Namespace) -> CurateConfig:
    gpus = args.gpus_per_actor
    score = ScoreConfig(
        student=args.student,
        windows=tuple(args.window or (4,)),
        segmenter=args.segmenter,
        device=args.device if args.device != "auto" or gpus else "cpu",
        dtype=args.dtype,
        max_tokens=args.max_tokens,
        max_window_tokens=args.max_window_tokens,
        batch_tokens=args.batch_tokens,
        max_chars=args.max_chars,
        system_prompt=args.system_prompt,
        trust_remote_code=args.trust_remote_code,
        revision=args.revision,
        attn_implementation=args.attn_implementation,
    )
    return CurateConfig(
        inputs=tuple(args.input or ()),
        input_format=args.input_format,
        output=args.output,
        run_id=args.run_id,
        overwrite=args.overwrite,
        dry_run=args.dry_run,
        prompt_column=args.prompt_column,
        response_column=args.response_column,
        teacher_column=args.teacher_column,
        prompt_id_column=args.prompt_id_column,
        correct_column=args.correct_column,
        select_by=args.select_by,
        seed=args.seed,
        actors=args.actors,
        gpus_per_actor=gpus,
        cpus_per_actor=args.cpus_per_actor
        if args.cpus_per_actor is not None
        else (1.0 if gpus else 0.5),
        batch_rows=args.batch_rows,
        ray_address=args.ray_address,
        score=score,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: localnat curate [options]   (localnat curate --help for the options)")
        return 0 if argv else 2
    if argv[0] != "curate":
        print(f"unknown command {argv[0]!r}; try: localnat curate --help", file=sys.stderr)
        return 2
    cfg = parse_config(argv[1:])
    from .job import run_job

    try:
        summary = run_job(cfg)
    except Exception as err:  # noqa: BLE001 - one clear line, credentials removed
        from .io import redact

        print(f"localnat: error: {redact(f'{type(err).__name__}: {err}')}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2) if cfg.dry_run else summary.get("report", ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
