"""cgroup v1 memory thresholds wake the monitor (DESIGN section 4, "Bursts"): with a sample
only every 10 s and no store involved, memory allocated past ``warning`` makes the kernel
signal the eventfd memguard registered, and the monitor samples at once. Runs where the
process's cgroup is v1 and its ``cgroup.event_control`` is writable; skipped elsewhere."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from waiting import wait_until

from memguard import MemoryManager, MemoryPolicy, Policy
from memguard.memory.probes import CgroupProbe, make_probe

MB = 2**20


def _cgroup_v1() -> CgroupProbe | None:
    try:
        probe = make_probe("cgroup", limit=None)
    except (ValueError, OSError):
        return None
    if not isinstance(probe, CgroupProbe) or probe.version != 1:
        return None
    if not os.access(probe.path / "cgroup.event_control", os.W_OK):
        return None
    return probe


PROBE = _cgroup_v1()
pytestmark = pytest.mark.skipif(PROBE is None, reason="needs a writable cgroup v1 memory cgroup")


def raw_usage() -> int:
    assert PROBE is not None
    return int((PROBE.path / "memory.usage_in_bytes").read_text())


@pytest.fixture
def manager() -> Iterator[MemoryManager]:
    raw = raw_usage()
    manager = MemoryManager(Policy(memory=MemoryPolicy(
        scope="cgroup", limit=raw + 2000 * MB, warning=raw + 60 * MB,
        emergency=raw + 1000 * MB, emergency_target=raw + 900 * MB, critical=raw + 1500 * MB,
        sample_interval="10s")))
    yield manager
    manager.stop()


def test_memory_past_a_threshold_wakes_the_monitor(manager: MemoryManager) -> None:
    manager.start()
    monitor = manager.monitor
    assert monitor is not None
    assert wait_until(lambda: monitor.ticks >= 1, timeout=5)
    kernel = monitor._ticker.kernel
    assert kernel is not None and wait_until(lambda: kernel.armed, timeout=2)
    ticks = monitor.ticks
    started = time.monotonic()
    blob = b"x" * (120 * MB)  # touched pages: the cgroup's usage passes warning
    assert wait_until(lambda: monitor.ticks > ticks, timeout=3)
    took = time.monotonic() - started
    assert kernel.fired >= 1
    assert took < 3 and len(blob) == 120 * MB
    manager.stop()
    assert not kernel.armed
