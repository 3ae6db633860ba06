"""No cleanup loop after a burst (DESIGN sections 4 and 10), on fake clocks and probes.

Three rules keep a quiet process from being cleaned sample after sample: the growth fit
starts afresh after every cleanup (nothing carried across it), the prediction looks ahead
only to the next sample, and no predicted emergency fires below ``emergency_target``.
"""

from __future__ import annotations

from typing import Any

import pytest

from memguard import MemoryManager, MemoryPolicy, Policy, managed_store
from memguard.memory.samples import MemorySample
from memguard.monitor.controller import EmergencyController
from memguard.monitor.readings import Readings
from memguard.policy.thresholds import Thresholds
from memguard.testing import FakeClock, FakeProbe, FakeReclaim

MB = 2**20
THRESHOLDS: dict[str, Any] = {
    "limit": "512MB", "warning": "250MB", "emergency": "300MB",
    "emergency_target": "200MB", "critical": "500MB", "sample_interval": "1s",
    "check_interval": "10m", "gc_interval": "10m", "summary_interval": "10m",
}


def sample(usage: int) -> MemorySample:
    return MemorySample(usage=usage, rss=usage, swap=0, heap=None, limit=512 * MB,
                        scope="process")


def thresholds() -> Thresholds:
    return MemoryPolicy(**THRESHOLDS).resolve(512 * MB)


# -- the growth fit -----------------------------------------------------------------------


def readings() -> Readings:
    return Readings(lambda: MemoryPolicy(**THRESHOLDS), lambda: None)


def test_the_growth_fit_starts_afresh_after_a_cleanup() -> None:
    fit = readings()
    for step in range(8):  # a burst: 100 MB/s
        fit.record(step * 0.1, 100 * MB + step * 10 * MB)
    assert fit.growth() == pytest.approx(100 * MB)
    assert fit.cleanup_began() == pytest.approx(100 * MB)  # the cleanup allows for it...
    fit.cleanup_ended(1.0)
    assert fit.growth() is None  # ...but it is not carried beyond the cleanup
    fit.record(1.5, 200 * MB)
    assert fit.growth() is None  # one sample since: no fit yet, no estimate
    fit.record(2.5, 200 * MB + MB)
    assert fit.growth() == pytest.approx(MB)  # only the samples after the cleanup


def test_after_a_cleanup_the_controller_predicts_nothing_until_a_new_fit() -> None:
    fit = readings()
    for step in range(8):
        fit.record(step * 0.1, 100 * MB + step * 25 * MB)
    fit.cleanup_began()
    fit.cleanup_ended(1.0)
    fit.record(1.1, 280 * MB)
    controller = EmergencyController(MemoryManager(Policy()))
    decision = controller.decide(1.1, sample(280 * MB), thresholds(), growth=fit.growth(),
                                 horizon=1.0)
    assert not decision.act


# -- the prediction horizon and the target ------------------------------------------------


def test_the_prediction_looks_only_to_the_next_sample() -> None:
    controller = EmergencyController(MemoryManager(Policy()))
    # 280 MB growing 30 MB/s: past 300 MB in 0.67 s. The next sample, 0.5 s away, comes
    # first and will see it: no cleanup yet (a full second ahead would have acted).
    assert not controller.decide(0.0, sample(280 * MB), thresholds(), growth=30 * MB,
                                 horizon=0.5).act
    decision = controller.decide(0.0, sample(280 * MB), thresholds(), growth=30 * MB,
                                 horizon=0.7)
    assert decision.act and decision.trigger == "predicted"


def test_no_predicted_emergency_below_the_target() -> None:
    controller = EmergencyController(MemoryManager(Policy()))
    # 190 MB, under emergency_target (200 MB), growing 2 GB/s: the next sample will act
    assert not controller.decide(0.0, sample(190 * MB), thresholds(), growth=2048 * MB,
                                 horizon=0.5).act
    assert controller.decide(0.0, sample(210 * MB), thresholds(), growth=2048 * MB,
                             horizon=0.5).trigger == "predicted"
    # the threshold itself still acts, whatever the growth
    assert controller.decide(0.0, sample(300 * MB), thresholds(), growth=None,
                             horizon=0.5).trigger == "threshold"


def test_a_predicted_cleanup_cleans_down_from_emergency_at_most() -> None:
    """A fit that foresees 420 MB at the next sample (noise just after a cleanup) evicts
    what a crossing of `emergency` would (300 -> 200 MB), not 420 -> 200 MB."""
    manager = MemoryManager(Policy(memory=MemoryPolicy(**THRESHOLDS)), clock=FakeClock(0.0),
                            probe=FakeProbe("260MB", "512MB"), reclaim=FakeReclaim())

    @managed_store(name="jobs", manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    for i in range(300):
        store[f"k{i}"] = {"status": "done", "result": "x" * MB}
    controller = EmergencyController(manager, reclaimer=FakeReclaim())
    start = manager.evicted_bytes

    def probe() -> MemorySample:  # usage follows what was evicted
        return sample(260 * MB - (manager.evicted_bytes - start))

    report = controller.run(sample(260 * MB), thresholds(), probe, trigger="predicted",
                            expected=420 * MB)
    assert 99 <= report.evicted <= 101 and 199 <= len(store) <= 201
    assert report.usage_after is not None and report.usage_after >= 158 * MB


def test_the_monitor_predicts_with_the_wait_until_its_next_sample() -> None:
    clock, probe = FakeClock(0.0), FakeProbe("250MB", "512MB")
    manager = MemoryManager(Policy(memory=MemoryPolicy(**THRESHOLDS)), clock=clock,
                            probe=probe, reclaim=FakeReclaim())
    monitor = manager._monitor()
    for usage in (250, 270, 290):  # 80 MB/s, sampled every 0.25 s (at warning)
        probe.set(f"{usage}MB")
        assert monitor.tick().emergency is None
        clock.advance(0.25)
    # At 290 MB the sample interval (0.25 s) would see 310 MB, past emergency; but the
    # monitor samples again in half the time to the crossing (0.0625 s), and at that
    # horizon usage stays under it: that next sample decides.
    assert monitor.next_wait() == pytest.approx(10 / 80 / 2)
    assert not monitor.controller.last_decision.act


# -- a quiet process after a burst ----------------------------------------------------------


def test_a_quiet_process_after_a_burst_is_cleaned_once() -> None:
    clock, probe = FakeClock(0.0), FakeProbe("100MB", "512MB")
    reclaim = FakeReclaim(then=lambda: probe.set("190MB"))  # what the cleanup gives back
    manager = MemoryManager(Policy(memory=MemoryPolicy(**THRESHOLDS)), clock=clock,
                            probe=probe, reclaim=reclaim)

    @managed_store(name="burst", manager=manager, size=lambda job: job["size"])
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    jobs = Jobs()
    for n in range(100):
        jobs[f"old{n}"] = {"status": "done", "size": 2 * MB}
    monitor = manager._monitor()
    emergencies = 0
    usage = 100
    while not emergencies:  # a burst of 240 MB/s, one sample every 0.1 s, until it acts
        probe.set(f"{usage}MB")
        emergencies += monitor.tick().emergency is not None
        clock.advance(0.1)
        usage += 24
        assert usage < 400
    # quiet: 190 MB and a small job every 0.5 s, read 0.3 s after it finished
    for n in range(40):
        jobs[f"small{n}"] = {"status": "done", "size": MB // 4}
        probe.set(190 * MB + n * (MB // 4))
        result = monitor.tick()
        assert result.emergency is None, f"cleaned again at quiet sample {n}"
        clock.advance(0.3)
        assert jobs[f"small{n}"]["size"] == MB // 4
        clock.advance(0.2)
