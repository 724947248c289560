"""Where a run's fixed start goes: one `localnat curate` night in this process, with the time
of each phase the driver passes (imports, the student's identity, Ray up, the scores pass's
first committed chunk, the pass's end, reduce, selected/, the manifest, Ray down at exit).

    python -m jobs.startup -- --input DIR --output OUT --run-id R --student S [--cache C ...]

Everything after `--` goes to `localnat curate` as is. Prints `seconds  phase` lines.
"""

from __future__ import annotations

import atexit
import logging
import sys
import time

START = time.time()


def mark(what: str) -> None:
    print(f"{time.time() - START:7.2f}  {what}", flush=True)


def main(argv: list[str]) -> int:
    from localnat.cli import main as cli
    from localnat.curate.run import directory as run
    from localnat.curate.run import progress

    mark("imports")

    class Said(logging.Handler):
        def emit(self, record):
            mark(record.getMessage()[:100])

    logging.getLogger("localnat").addHandler(Said())
    start_ray = progress.start_ray

    def timed_start(sizing):
        mark("Ray: starting")
        start_ray(sizing)
        mark("Ray: up")

    run.start_ray = timed_start
    add = run._Commits.add
    first = [True]

    def first_commit(self, rows):
        if first[0]:
            first[0] = False
            mark("scores pass: the first counts back")
        return add(self, rows)

    run._Commits.add = first_commit
    atexit.register(lambda: mark("exit (Ray down)"))
    code = cli(["curate", *argv])
    mark("run returned")
    return code


if __name__ == "__main__":
    args = sys.argv[1:]
    raise SystemExit(main(args[1:] if args[:1] == ["--"] else args))
