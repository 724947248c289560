"""Entrypoint for `ray job submit -- python -m jobs.curate [options]` (same options as
`localnat curate`)."""

import sys

from localnat.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["curate", *sys.argv[1:]]))
