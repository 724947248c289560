"""`localnat curate|show|plot ...`; `python -m jobs.curate ...` is `localnat curate`.

The curate options are derived from the typed config (`localnat.options`).
"""

from __future__ import annotations

import argparse
import json
import sys

USAGE = """usage: localnat COMMAND [options]

commands:
  curate   score inputs, rank teachers, select responses (localnat curate --help)
  show     print a finished run's leaderboard and counts: localnat show RUN_DIR_OR_URI
  plot     per-step log-probs of each teacher's response to one prompt:
           localnat plot RUN_DIR_OR_URI --prompt-id ID [--out FILE.png]
  cache    fold a score cache's parts into a compact generation:
           localnat cache compact CACHE_URI [--bound N] [--force]"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    commands = {"curate": curate, "show": show, "plot": plot, "cache": cache}
    if command not in commands:
        print(f"unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    from .logs import setup

    setup(verbose="--verbose" in rest)
    try:
        return commands[command](rest)
    except Exception as err:  # noqa: BLE001 - one clear line, credentials removed
        from .redact import redact

        # our own errors say what is wrong and what to do; others keep their type's name
        ours = type(err).__module__.startswith("localnat.") or isinstance(err, LookupError)
        text = str(err) if ours else f"{type(err).__name__}: {err}"
        print(f"localnat: error: {redact(text)}", file=sys.stderr)
        return 1


def curate(argv: list[str]) -> int:
    from .curate.job import run_job
    from .curate.run.progress import Terminated
    from .logs import LOG
    from .options import parse_config

    cfg = parse_config(argv)
    try:
        summary = run_job(cfg)
    except (Terminated, KeyboardInterrupt) as stop:
        LOG.info(
            "interrupted: every committed chunk is kept; rerun with the same --run-id and "
            "--output to resume"
        )
        _shutdown_ray()
        return 143 if isinstance(stop, Terminated) else 130
    print(json.dumps(summary, indent=2) if cfg.dry_run else summary.get("report", ""))
    return 0


def _shutdown_ray() -> None:
    """Leave Ray on an interrupted run; a pass still waiting on it then fails in its own
    thread as Ray goes, which Ray Data would report as its own error: not said."""
    import logging

    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception:  # noqa: BLE001 - exiting anyway
        pass


def _parser(prog: str, description: str, where: str) -> argparse.ArgumentParser:
    """A command's parser, its usage errors one line (as `localnat curate`'s)."""
    from .options import OneLineParser

    p = OneLineParser(prog=f"localnat {prog}", description=description)
    p.add_argument(where.lower(), metavar=where)
    return p


def show(argv: list[str]) -> int:
    from .curate.report.show import show_run

    p = _parser("show", USAGE.splitlines()[4], "RUN_DIR_OR_URI")
    print(show_run(p.parse_args(argv).run_dir_or_uri))
    return 0


def plot(argv: list[str]) -> int:
    from .curate.report.show import plot_prompt

    p = _parser(
        "plot",
        "Per-step log-probs along each teacher's response to one prompt: local (the step's "
        "window) and global (the whole-response pass); selected bold, incorrect dashed.",
        "RUN_DIR_OR_URI",
    )
    p.add_argument("--prompt-id", required=True)
    p.add_argument("--out", help="PNG path (default: RUN/plots/<prompt-id>.png, or ./ for URIs)")
    args = p.parse_args(argv)
    print(plot_prompt(args.run_dir_or_uri, args.prompt_id, args.out))
    return 0


def cache(argv: list[str]) -> int:
    from .curate.cache.namespace import PART_BOUND
    from .curate.cache.writer import compact_all

    p = _parser(
        "cache compact",
        "Fold the parts of every namespace under a score cache (or of one namespace) into a "
        "new generation, and delete what no reader needs any more.",
        "CACHE_URI",
    )
    p.add_argument("--bound", type=int, default=PART_BOUND, help="parts a namespace may keep")
    p.add_argument("--force", action="store_true", help="fold any parts, however few")
    if not argv or argv[0] != "compact":
        p.error("the one action is compact: localnat cache compact CACHE_URI")
    args = p.parse_args(argv[1:])
    done = compact_all(args.cache_uri, args.bound, args.force)
    print(json.dumps(done, indent=2))
    return 0 if done else 1


if __name__ == "__main__":
    raise SystemExit(main())
