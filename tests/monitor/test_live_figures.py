"""Live figures that are true (issue 22): the growth /memory shows comes from the last few
seconds and falls back within seconds once growth stops; the active counts follow jobs
completed in place within one sample."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from waiting import wait_until

from memguard import MemoryManager, MemoryPolicy, Policy, managed_store
from memguard.monitor.readings import SHOWN_WINDOW
from memguard.testing import FakeProbe
from memguard.web.wsgi import wsgi_app

MB = 2**20


@pytest.fixture
def probe() -> FakeProbe:
    return FakeProbe("100MB", limit="600MB")


@pytest.fixture
def manager(probe: FakeProbe) -> Iterator[MemoryManager]:
    """A real monitor thread on the real clock, sampling every 100 ms."""
    manager = MemoryManager(Policy(memory=MemoryPolicy(
        limit="600MB", warning="450MB", emergency="500MB", emergency_target="400MB",
        critical="580MB", sample_interval=0.1)), probe=probe)
    manager.start()
    yield manager
    manager.stop()


def memory(manager: MemoryManager) -> dict[str, Any]:
    with httpx.Client(transport=httpx.WSGITransport(app=wsgi_app(manager)),
                      base_url="http://testserver") as client:
        body: dict[str, Any] = client.get("/memory").json()
        return body


def test_growth_falls_back_within_seconds_after_a_burst(
    manager: MemoryManager, probe: FakeProbe
) -> None:
    # A burst: +150MB in 1.5 s (6 GB a minute), well under every threshold.
    for step in range(16):
        probe.set(100 * MB + step * 10 * MB)
        time.sleep(0.1)
    during = memory(manager)
    assert during["growth_per_minute"] is not None
    assert during["growth_per_minute"] > 1000 * MB
    assert during["time_to_limit"] is not None
    stopped = time.monotonic()
    # Then nothing grows: within the window (plus a sample) the figure says so.
    assert wait_until(lambda: not memory(manager)["growth_per_minute"],
                      timeout=SHOWN_WINDOW + 1.0)
    took = time.monotonic() - stopped
    after = memory(manager)
    assert not after["growth_per_minute"] and after["time_to_limit"] is None
    assert took <= SHOWN_WINDOW + 1.0
    assert manager.get_memory_stats().growth_per_minute in (None, 0.0)


@pytest.mark.parametrize(("jobs", "max_jobs"), [(100, None), (111, 100)])
def test_jobs_completed_in_place_stop_counting_as_active_within_a_sample(
    manager: MemoryManager, jobs: int, max_jobs: Any
) -> None:
    @managed_store(name="work", manager=manager, max_jobs=max_jobs)
    class Work(dict):  # type: ignore[type-arg]
        pass

    store = Work()
    for n in range(jobs):
        store[f"job-{n}"] = {"status": "running", "result": None}
    (work,) = memory(manager)["stores"]
    assert work["active"] == jobs  # all running: none evicted, all active
    for job in store.values():  # completed in place, the store never told
        job["status"] = "completed"
        job["result"] = "x" * 1000
    ticks = manager.monitor.ticks if manager.monitor else 0
    # Two ticks from here: the first may have begun before the change.
    assert wait_until(lambda: manager.monitor is not None and manager.monitor.ticks >= ticks + 2,
                      timeout=5)
    (work,) = memory(manager)["stores"]
    assert work["active"] == 0, work
