"""Samples taken during a cleanup count (issue 22): the controller samples between its rounds,
and a spike it reads there moves the level, logs "quota exceeded" once usage passes the limit
and sets the peak that /memory and /metrics show."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from memguard import MemoryManager, MemoryPolicy, Policy, managed_store
from memguard.testing import FakeClock, FakeProbe, FakeReclaim
from memguard.web.wsgi import wsgi_app

MB = 2**20


@pytest.fixture
def probe() -> FakeProbe:
    return FakeProbe("300MB", limit="512MB")


@pytest.fixture
def manager(probe: FakeProbe) -> Iterator[MemoryManager]:
    spikes = iter(["560MB", "340MB", "340MB", "340MB"])
    # The app allocates while the cleanup runs: the first reclaim finds usage over the
    # limit (the sample after it reads 560MB), the next one finds it back down.
    reclaim = FakeReclaim(then=lambda: probe.set(next(spikes, "340MB")))
    manager = MemoryManager(Policy(memory=MemoryPolicy(
        limit="512MB", warning="400MB", emergency="450MB", emergency_target="350MB",
        critical="500MB")), clock=FakeClock(1000.0), probe=probe, reclaim=reclaim)
    yield manager
    manager.stop()


def test_a_spike_inside_a_cleanup_counts(manager: MemoryManager, probe: FakeProbe,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="memguard")

    @managed_store(name="diagram", manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    for n in range(40):
        store[f"j{n}"] = {"status": "done", "result": "x" * (4 * MB)}
    monitor = manager.get_memory_stats() and manager.monitor
    assert monitor is not None
    probe.set("460MB")  # over emergency: the tick cleans up
    result = monitor.tick()
    assert result.emergency is not None and result.emergency.rounds >= 1
    assert result.sample is not None and result.sample.usage == 460 * MB
    lines = [r.getMessage() for r in caplog.records]
    quota = [line for line in lines if "quota exceeded" in line]
    assert quota == ["Memory quota exceeded: usage 560.0MB > limit 512.0MB (109%)"], lines
    assert any(line.startswith("Memory level emergency -> critical: usage 560.0MB")
               for line in lines), lines
    stats = manager.get_memory_stats()
    assert stats.sample.usage == 340 * MB
    assert stats.totals["peak_usage_bytes"] == 560 * MB
    with httpx.Client(transport=httpx.WSGITransport(app=wsgi_app(manager)),
                      base_url="http://testserver") as client:
        body = client.get("/metrics").text
        assert client.get("/memory").json()["totals"]["peak_usage_bytes"] == 560 * MB
    peak = [s.value for f in text_string_to_metric_families(body) for s in f.samples
            if s.name == "memguard_memory_peak_bytes"]
    assert peak == [560 * MB]
