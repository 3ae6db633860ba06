"""The stores wake the monitor early (DESIGN section 4, "Bursts"): with a sample only every
10 s, a burst of inserts (jobs or bytes) makes the running monitor sample at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from waiting import wait_until

from memguard import MemoryManager, MemoryPolicy, Policy, managed_store
from memguard.monitor.tick import WAKE_JOBS
from memguard.testing import FakeProbe

MB = 2**20


@pytest.fixture
def manager() -> Iterator[MemoryManager]:
    manager = MemoryManager(Policy(memory=MemoryPolicy(
        limit="512MB", warning="400MB", emergency="450MB", emergency_target="350MB",
        critical="500MB", sample_interval="10s")), probe=FakeProbe("100MB", limit="512MB"))
    yield manager
    manager.stop()


def started(manager: MemoryManager) -> Any:
    @managed_store(name="burst", manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    manager.start()
    monitor = manager.monitor
    assert monitor is not None
    assert wait_until(lambda: monitor.ticks >= 1, timeout=5)
    time.sleep(0.1)  # the thread is in its 10 s wait now
    return Jobs(), monitor


def test_a_burst_of_jobs_wakes_the_monitor(manager: MemoryManager) -> None:
    store, monitor = started(manager)
    ticks = monitor.ticks
    for n in range(WAKE_JOBS - 1):
        store[f"small-{n}"] = {"status": "done", "result": n}
    time.sleep(0.3)
    assert monitor.ticks == ticks  # under the margin: the wait goes on
    store["one-more"] = {"status": "done", "result": 0}
    assert wait_until(lambda: monitor.ticks > ticks, timeout=2)
    assert manager.intake.wakes == 1


def test_a_burst_of_bytes_wakes_the_monitor(manager: MemoryManager) -> None:
    store, monitor = started(manager)
    ticks = monitor.ticks
    for n in range(3):  # 8 MB each: past the 8 MB margin (1/64 of 512 MB) at the first
        store[f"big-{n}"] = {"status": "done", "result": b"x" * (8 * MB)}
    assert wait_until(lambda: monitor.ticks > ticks, timeout=2)
    assert manager.intake.wakes >= 1


def test_a_stopped_monitor_is_not_woken(manager: MemoryManager) -> None:
    store, _monitor = started(manager)
    manager.stop()
    for n in range(WAKE_JOBS + 1):
        store[f"small-{n}"] = {"status": "done", "result": n}
    assert manager.intake.wakes == 0


def test_every_write_path_counts_toward_a_burst(manager: MemoryManager) -> None:
    """`[]=`, `update`, `setdefault` and `|=` of a dict store, and the same on a `mapping=`
    store's dict, each count one job per job stored; a `setdefault` that finds its key
    stores nothing and counts nothing."""

    @managed_store(name="dicts", manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    @managed_store(name="attribute", mapping="jobs", manager=manager)
    class Service:
        def __init__(self) -> None:
            self.jobs: dict[str, Any] = {}

    job = {"status": "done", "result": 0}
    for jobs in (Jobs(), Service().jobs):
        before = manager.intake.jobs
        jobs["a"] = job
        jobs.update({"b": job, "c": job})
        jobs.setdefault("d", job)
        jobs.setdefault("d", job)  # there already: nothing stored
        jobs |= {"e": job}
        assert manager.intake.jobs - before == 5


def test_a_burst_of_setdefault_wakes_the_monitor(manager: MemoryManager) -> None:
    store, monitor = started(manager)
    ticks = monitor.ticks
    for n in range(WAKE_JOBS):
        store.setdefault(f"small-{n}", {"status": "done", "result": n})
    assert wait_until(lambda: monitor.ticks > ticks, timeout=2)
    assert manager.intake.wakes == 1
