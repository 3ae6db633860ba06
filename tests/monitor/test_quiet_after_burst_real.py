"""After a burst, a quiet process is not cleaned sample after sample (issue 21), for real.

The real monitor thread samples this process' RSS; the results are real allocations. A burst
of about 240 MB/s of finished results sets off one emergency; then, for 20 quiet seconds, a
small job is stored running every 0.5 s, completed in place (the store never sees it) with a
1 MiB result, and read 0.3 s after it finished. At most one further emergency may run, and
no result may be evicted before its read.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from memguard import MemoryManager, MemoryPolicy, Policy, managed_store
from memguard.memory.probes import make_probe

pytestmark = pytest.mark.slow

MB = 2**20


def test_a_quiet_process_after_a_burst_keeps_its_results() -> None:
    base = make_probe("process")().usage
    memory = MemoryPolicy(
        scope="process", limit=base + 480 * MB, warning=base + 120 * MB,
        emergency=base + 160 * MB, emergency_target=base + 80 * MB,
        critical=base + 460 * MB, sample_interval="1s", check_interval="10m",
        gc_interval="10m", summary_interval="10m", cooldown="5s")
    manager = MemoryManager(Policy(memory=memory))

    @managed_store(name="results", manager=manager)
    class Results(dict):  # type: ignore[type-arg]
        pass

    results = Results()
    monitor = manager.setup_memory_monitoring()
    try:
        def emergencies() -> int:
            return int(monitor.totals["cleanups"].get("emergency", 0))

        # the burst: 4 MiB results at about 240 MB/s until the monitor cleans up once
        started = time.monotonic()
        n = 0
        while emergencies() == 0:
            assert time.monotonic() - started < 10, "the burst never set off an emergency"
            results[f"burst{n}"] = {"status": "done", "result": b"x" * (4 * MB)}
            n += 1
            time.sleep(4 / 240)
        after_burst = emergencies()
        # the quiet: a small job every 0.5 s, completed in place, read 0.3 s after
        lost: list[str] = []
        end = time.monotonic() + 20
        k = 0
        while time.monotonic() < end:
            key = f"quiet{k}"
            job: dict[str, Any] = {"status": "running", "result": None}
            results[key] = job
            time.sleep(0.1)
            job["result"] = b"y" * MB
            job["status"] = "done"  # in place: the store never sees this write
            time.sleep(0.3)
            read = results.get(key)
            if read is None or read["result"] is None:
                lost.append(key)
            time.sleep(0.1)
            k += 1
        further = emergencies() - after_burst
        assert further <= 1, (
            f"{further} emergencies in 20 quiet seconds: {list(monitor.recent_cleanups)}")
        assert lost == [], f"{len(lost)} of {k} results evicted before their read"
        assert k >= 35
    finally:
        manager.stop()
