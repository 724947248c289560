"""The driver's memory: the manifest's measurement of it, the job's Arrow pool."""

import subprocess
import sys

PEAK = "from localnat.curate.report.manifest import peak_rss_mb; print(peak_rss_mb())"


def test_the_driver_peak_rss_is_its_own_not_its_parents():
    """A driver started by a large process (a notebook, a benchmark holding its corpus)
    reports its own peak: `ru_maxrss` survives exec, and said 1.4 GB for a 1.2 GB driver."""
    held = bytearray(800 * 2**20)  # the parent's 800 MiB, resident
    held[::4096] = b"x" * len(held[::4096])
    out = subprocess.run([sys.executable, "-c", PEAK], capture_output=True, text=True, check=True)
    peak = float(out.stdout)
    assert 20 < peak < 600, peak
    del held


def test_the_job_takes_arrow_memory_from_jemalloc_and_gives_the_callers_pool_back(monkeypatch):
    import pyarrow as pa

    from localnat.curate.job import _arrow_pool

    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    before = pa.default_memory_pool().backend_name
    with _arrow_pool():
        assert pa.default_memory_pool().backend_name == "jemalloc"  # the Linux wheels have it
    assert pa.default_memory_pool().backend_name == before
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    with _arrow_pool():  # the user's choice stays
        assert pa.default_memory_pool().backend_name == before
