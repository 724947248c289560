"""One run per run directory, on local files and on S3."""

import json
import subprocess
import time

import pytest

from localnat.curate.lease import Lease, RunBusy
from localnat.curate.storage import list_files, write_text


@pytest.mark.parametrize("where", ["local", "s3"])
def test_lease_is_exclusive_and_a_dead_runs_lease_is_taken_over(s3env, tmp_path, where):
    s3env.bucket("leases")
    run_dir = str(tmp_path / "run") if where == "local" else "s3://leases/runs/r1"
    with Lease(run_dir) as first:
        with pytest.raises(RunBusy, match="another run holds .*wait for it to finish"):
            with Lease(run_dir):
                pass
        assert [u.rsplit("/", 1)[-1] for u in list_files(f"{run_dir}/_lease")] == [
            f"{first.owner}.json"
        ]  # the refused run withdrew its own lease
    assert list_files(f"{run_dir}/_lease") == []  # released
    # a killed run's lease (its process is gone) and an expired one do not block
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = {"owner": "dead", "host": __import__("socket").gethostname(), "pid": dead.pid}
    write_text(f"{run_dir}/_lease/dead.json", json.dumps({**stale, "expires": time.time() + 600}))
    old = {"owner": "old", "host": "elsewhere", "pid": 1, "expires": time.time() - 1}
    write_text(f"{run_dir}/_lease/old.json", json.dumps(old))
    with Lease(run_dir):
        pass
    # a live lease of a run on another host blocks until it expires
    live = {"owner": "live", "host": "elsewhere", "pid": 1, "expires": time.time() + 600}
    write_text(f"{run_dir}/_lease/live.json", json.dumps(live))
    with pytest.raises(RunBusy, match="host elsewhere"):
        with Lease(run_dir):
            pass
