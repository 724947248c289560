"""One run per run directory, on local files and on S3."""

import json
import subprocess
import time

import pytest

from localnat.curate.run.lease import Lease, RunBusy
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


def test_a_lease_not_renewed_for_two_ttls_is_dead_whatever_its_expiry(tmp_path):
    """A KubeRay retry on another pod finds the lease of a run whose host died: it proceeds
    after 2 TTLs without a person; meanwhile the message says until when and what to do."""
    import os
    import re

    run_dir = str(tmp_path / "run")
    lease = tmp_path / "run" / "_lease" / "gone.json"
    far = {"owner": "gone", "host": "elsewhere", "pid": 1, "expires": time.time() + 86_400}
    write_text(str(lease), json.dumps(far))
    with pytest.raises(RunBusy) as err:  # renewed just now (its mtime): live
        with Lease(run_dir, ttl=2.0):
            pass
    message = str(err.value)
    until = re.search(r"until (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", message)
    assert until, message  # the full date-time, not a clock time a day away
    shown = time.mktime(time.strptime(until.group(1), "%Y-%m-%d %H:%M:%S")) - time.timezone
    assert shown <= time.time() + 3  # capped at now + TTL, not the day it claims
    assert str(lease) in message and f"delete {lease}" in message
    os.utime(lease, (time.time() - 5, time.time() - 5))  # not renewed for 2.5 TTLs
    with Lease(run_dir, ttl=2.0):
        assert not lease.exists()  # a dead run's lease is taken over
    assert list_files(f"{run_dir}/_lease") == []


def test_simultaneous_starts_never_both_proceed_crash_or_leave_a_lease(tmp_path):
    import threading

    run_dir = str(tmp_path / "run")
    barrier = threading.Barrier(40)
    holders, most, outcomes = [0], [0], []
    guard = threading.Lock()

    def start():
        barrier.wait()
        try:
            with Lease(run_dir):
                with guard:
                    holders[0] += 1
                    most[0] = max(most[0], holders[0])
                time.sleep(0.01)
                with guard:
                    holders[0] -= 1
            outcomes.append("held")
        except RunBusy:
            outcomes.append("busy")
        except Exception as err:  # noqa: BLE001 - the failure this test looks for
            outcomes.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=start) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(outcomes)) <= ["busy", "held"], outcomes
    assert most[0] <= 1  # never two holders at once
    assert list_files(f"{run_dir}/_lease") == []  # nothing left behind
