"""The monitor's decisions, driven synchronously with FakeClock and FakeProbe through `tick()`.

Only the tests of the thread itself (robustness, SIGUSR1, interval) start it, and each waits
with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

import pytest
from waiting import wait_until

from memguard import MemoryManager, MemoryPolicy, Policy, managed_store
from memguard.memory.samples import MemorySample
from memguard.monitor.controller import MAX_ROUNDS
from memguard.monitor.levels import HYSTERESIS, heroku_line, next_level, raw_level
from memguard.monitor.readings import MemoryStats, growth_rate
from memguard.monitor.thread import THREAD_NAME, Monitor
from memguard.policy.thresholds import Thresholds
from memguard.policy.units import parse_size
from memguard.testing import FakeClock, FakeProbe, FakeReclaim, capture_evictions

MB = 2**20

THRESHOLDS: dict[str, Any] = {
    "limit": "512MB",
    "warning": "400MB",
    "emergency": "450MB",
    "emergency_target": "350MB",
    "critical": "500MB",
    "check_interval": "2m",
    "gc_interval": "5m",
    "cooldown": "30s",
    "summary_interval": "10m",
}


def make_policy(**memory: Any) -> Policy:
    return Policy(memory=MemoryPolicy(**{**THRESHOLDS, **memory}))


@pytest.fixture
def fake_reclaim() -> FakeReclaim:
    """reclaim() would gc the test process and trim its heap: every manager here gets this
    fake instead, which counts calls (a quick reclaim, the youngest generation and a trim,
    counts as one too)."""
    return FakeReclaim()


class StoreProbe:
    """Usage = a base plus the weighed bytes of every store: eviction gives memory back at
    `efficiency` (1.0 = every estimated byte; 0.0 = a perfectly fragmented heap)."""

    def __init__(self, manager: MemoryManager, base: int, *, efficiency: float = 1.0,
                 limit: Optional[int] = 512 * MB) -> None:
        self.manager = manager
        self.base = base
        self.efficiency = efficiency
        self.limit = limit
        self.start: Optional[int] = None

    def stored(self) -> int:
        return sum(h.stats().bytes for h in self.manager.handles())

    def __call__(self) -> MemorySample:
        stored = self.stored()
        if self.start is None:
            self.start = stored
        gone = self.start - stored
        usage = self.base + self.start - int(gone * self.efficiency)
        return MemorySample(usage=usage, rss=usage, swap=0, heap=None, limit=self.limit,
                            scope="process")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def probe() -> FakeProbe:
    return FakeProbe("300MB", limit="512MB")


@pytest.fixture
def manager(
    clock: FakeClock, probe: FakeProbe, fake_reclaim: FakeReclaim
) -> Iterator[MemoryManager]:
    manager = MemoryManager(make_policy(), clock=clock, probe=probe, reclaim=fake_reclaim)
    yield manager
    manager.stop()


@pytest.fixture
def monitor(manager: MemoryManager) -> Monitor:
    monitor = Monitor(manager)
    manager.monitor = monitor
    return monitor


def fill(manager: MemoryManager, name: str, *, done: int, running: int = 0,
         size: int = MB) -> Any:
    """A managed store `name` with `done` finished jobs of ~`size` bytes and `running` active."""

    @managed_store(name=name, manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    for i in range(running):
        store[f"run-{i}"] = {"status": "running", "result": "r" * size}
    for i in range(done):
        store[f"done-{i}"] = {"status": "done", "result": "d" * size}
    return store


def level_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "Memory level" in r.getMessage()]


# --------------------------------------------------------------------------------------------
# Levels and hysteresis


def test_levels_rise_at_once_and_fall_only_past_the_margin() -> None:
    t = Thresholds(warning=400, emergency=500, emergency_target=350, critical=600, limit=512)
    assert raw_level(399, t) == "ok"
    assert raw_level(400, t) == "warning"
    assert raw_level(500, t) == "emergency"
    assert raw_level(700, t) == "critical"
    assert next_level("ok", 600, t) == "critical"  # rising skips levels
    # falling: hold the level within 5% of its threshold, then drop
    assert next_level("warning", 399, t) == "warning"
    assert next_level("warning", int(400 * (1 - HYSTERESIS)), t) == "warning"
    assert next_level("warning", int(400 * (1 - HYSTERESIS)) - 1, t) == "ok"
    assert next_level("critical", 580, t) == "critical"
    assert next_level("critical", 560, t) == "emergency"
    # a big fall drops several levels at once, but stops where the margin holds
    assert next_level("critical", 100, t) == "ok"
    assert next_level("critical", 390, t) == "warning"


def test_unset_thresholds_are_never_entered() -> None:
    t = Thresholds(warning=None, emergency=500, critical=None)
    assert raw_level(10**12, t) == "emergency"
    assert next_level("critical", 499, t) == "emergency"


def test_tick_levels_with_hysteresis_and_each_change_logged_once(
    monitor: Monitor, probe: FakeProbe, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="memguard")
    seen = []
    for usage in ("300MB", "410MB", "420MB", "395MB", "385MB", "370MB", "370MB", "510MB",
                  "505MB", "300MB"):
        probe.set(usage)
        clock.advance(1)
        seen.append(monitor.tick().level)
    assert seen == ["ok", "warning", "warning", "warning", "warning", "ok", "ok", "critical",
                    "critical", "ok"]
    records = level_records(caplog)
    assert [r.getMessage().split(":")[0] for r in records] == [
        "Memory level ok -> warning",
        "Memory level warning -> ok",
        "Memory level ok -> critical",
        "Memory level critical -> ok",
    ]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO, logging.CRITICAL,
                                            logging.INFO]
    assert monitor.level == "ok"


# --------------------------------------------------------------------------------------------
# Periodic work


def test_two_clocks_samples_every_tick_passes_every_check_interval(
        monitor: Monitor, manager: MemoryManager, clock: FakeClock, probe: FakeProbe,
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    real = manager.run_cleanup

    def counting() -> Any:
        calls.append(clock())
        return real()

    monkeypatch.setattr(manager, "run_cleanup", counting)
    samples = []
    for _ in range(300):  # 5 minutes of one-second samples
        clock.advance(1)
        samples.append(monitor.tick().sample)
    assert all(sample is not None for sample in samples)
    assert calls == [1001, 1121, 1241]  # the pass: every check_interval (2m) only
    assert monitor.sample_interval == 0.25
    probe.set("420MB")  # at warning: four times as often
    monitor.tick()
    assert monitor.level == "warning" and monitor.sample_interval == 0.0625


def test_periodic_pass_evicts_expired_jobs_and_is_remembered(
    monitor: Monitor, manager: MemoryManager, clock: FakeClock
) -> None:
    store = fill(manager, "aging", done=3)
    manager.load_policy(Policy(memory=manager.policy.memory, stores={"aging": {"max_age": "20m"}}))
    clock.advance(19 * 60)
    assert monitor.tick().cleanup is not None
    assert len(store) == 3
    clock.advance(2 * 60)
    result = monitor.tick()
    assert result.cleanup is not None and result.cleanup.by_cause == {"age": 3}
    assert len(store) == 0
    assert list(monitor.recent_cleanups) == [result.cleanup]


def test_a_pass_that_frees_much_gives_memory_back(
    monitor: Monitor, manager: MemoryManager, clock: FakeClock, probe: FakeProbe,
    fake_reclaim: FakeReclaim
) -> None:
    store = fill(manager, "big", done=40)  # ~40MB of results
    small = fill(manager, "small", done=2)
    manager.load_policy(Policy(memory=manager.policy.memory, stores={
        "big": {"max_age": "20m"}, "small": {"max_age": "30m"}}))
    monitor.tick()
    assert fake_reclaim.calls == 0
    clock.advance(21 * 60)
    fake_reclaim.then = lambda: probe.set("260MB")  # the probe falls by 40MB after it
    fake_reclaim.trimmed = True
    result = monitor.tick()  # frees ~40MB >= TRIM_AFTER: reclaim, which counts as the gc
    assert len(store) == 0 and fake_reclaim.calls == 1 and result.gc_collected == 0
    assert result.cleanup is not None
    assert (result.cleanup.usage_before, result.cleanup.usage_after) == (300 * MB, 260 * MB)
    assert monitor.totals["reclaimed_bytes"] == 40 * MB
    clock.advance(10 * 60)
    monitor.tick()  # frees ~2MB: no reclaim, just the periodic gc
    assert len(small) == 0 and fake_reclaim.calls == 1


def test_evictions_on_insert_count_toward_giving_memory_back(
    monitor: Monitor, manager: MemoryManager, fake_reclaim: FakeReclaim
) -> None:
    @managed_store(name="bounded", manager=manager, max_jobs=1)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    for i in range(20):  # each insert evicts the previous ~1MB job
        store[i] = {"status": "done", "result": "d" * MB}
    monitor.tick()
    assert fake_reclaim.calls == 0  # ~19MB freed: not yet worth a trim
    for i in range(20, 40):
        store[i] = {"status": "done", "result": "d" * MB}
    monitor.tick()
    assert fake_reclaim.calls == 1  # ~39MB freed since the start: trim
    monitor.tick()
    assert fake_reclaim.calls == 1


def test_gc_runs_every_gc_interval(monitor: Monitor, clock: FakeClock) -> None:
    # check every 2m, gc every 5m: ticks at 0, 2, 4, 6, 8, 10, 12 minutes
    collected = []
    for _ in range(7):
        collected.append(monitor.tick().gc_collected is not None)
        clock.advance(120)
    assert collected == [False, False, False, True, False, False, True]


def test_summary_line_every_summary_interval(
    monitor: Monitor, manager: MemoryManager, clock: FakeClock,
    caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="memguard")
    store = fill(manager, "diagram", done=2)
    for _ in range(11):  # 0..20 minutes every 2 minutes: summaries at 0, 10, 20
        monitor.tick()
        clock.advance(120)
    lines = [r.getMessage() for r in caplog.records if "; jobs " in r.getMessage()]
    assert len(lines) == 3
    assert "usage 300.0MB (59% of limit)" in lines[0]
    assert "diagram=2 (" in lines[0] and len(store) == 2


def test_heroku_sample_lines_only_when_enabled(
    manager: MemoryManager, monitor: Monitor, probe: FakeProbe,
    caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="memguard")
    monitor.tick()
    assert not [r for r in caplog.records if "sample#" in r.getMessage()]
    manager.load_policy(make_policy(log_samples=True))
    probe.set("431.7MB")
    monitor.tick()
    lines = [r.getMessage() for r in caplog.records if "sample#" in r.getMessage()]
    assert len(lines) == 1
    assert "sample#memguard.rss=431.70MB" in lines[0]
    assert lines[0].startswith(f"source={socket.gethostname()}.pid{os.getpid()} ")
    assert lines[0].endswith("sample#memguard.level=1")


def test_heroku_line_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNO", "web.1")
    sample = MemorySample(usage=453_000_000, rss=452_700_000, swap=300_000, heap=10 * MB,
                          limit=512 * MB, scope="process")
    assert heroku_line(sample, "warning") == (
        f"source=web.1.pid{os.getpid()} "
        "sample#memguard.usage=432.01MB sample#memguard.rss=431.73MB "
        "sample#memguard.swap=0.29MB sample#memguard.heap=10.00MB "
        "sample#memguard.utilization=0.844 sample#memguard.level=1"
    )
    values = [part.split("=", 1)[1] for part in heroku_line(sample, "critical").split()[1:]]
    assert all(re.fullmatch(r"\d+(\.\d+)?(MB)?", value) for value in values)


def test_heap_warning_logged_once_per_crossing(
    manager: MemoryManager, monitor: Monitor, probe: FakeProbe,
    caplog: pytest.LogCaptureFixture
) -> None:
    manager.load_policy(make_policy(warning_heap="300MB"))
    caplog.set_level(logging.INFO, logger="memguard")
    for heap in ("100MB", "310MB", "320MB", "299MB", "250MB", "305MB"):
        probe.set("300MB", heap=heap)
        monitor.tick()
    warnings = [r for r in caplog.records if "warning_heap" in r.getMessage()
                and r.levelno == logging.WARNING]
    back = [r for r in caplog.records if "back below warning_heap" in r.getMessage()]
    assert len(warnings) == 2 and len(back) == 1


# --------------------------------------------------------------------------------------------
# Emergency


def test_emergency_evicts_to_the_target_by_estimate(
    clock: FakeClock, fake_reclaim: FakeReclaim
) -> None:
    manager = MemoryManager(make_policy(), clock=clock, reclaim=fake_reclaim)
    big = fill(manager, "big", done=60, size=2 * MB)
    small = fill(manager, "small", done=40, size=MB // 2)
    probe = StoreProbe(manager, base=320 * MB)
    manager.probe = probe
    monitor = Monitor(manager)
    usage = probe().usage
    assert usage > 450 * MB  # 320 + 120 + 20 MB
    with capture_evictions(manager) as events:
        result = monitor.tick()
    report = result.emergency
    assert report is not None and report.kind == "emergency"
    need = usage - 350 * MB
    estimate = sum(e.size or 0 for e in events)
    assert report.freed_estimate == estimate
    assert need <= estimate < need + 2 * MB + 64 * 1024  # at most one job past the budget
    assert report.usage_before == usage
    assert report.usage_after is not None and report.usage_after <= 350 * MB
    assert report.reclaimed == usage - report.usage_after
    assert report.note == ""
    # largest store first: the big store paid for it all
    assert {e.store for e in events} == {"big"}
    assert len(small) == 40 and len(big) < 60
    assert result.level == "ok"  # re-judged after the cleanup: below 95% of warning (380MB)


def test_no_cooldown_after_a_cleanup_that_reached_its_target(
    clock: FakeClock, fake_reclaim: FakeReclaim
) -> None:
    manager = MemoryManager(make_policy(cooldown="30s"), clock=clock, reclaim=fake_reclaim)
    store = fill(manager, "jobs", done=100, size=2 * MB)
    probe = StoreProbe(manager, base=250 * MB)
    manager.probe = probe
    monitor = Monitor(manager)
    first = monitor.tick().emergency
    assert first is not None and first.usage_after is not None
    assert first.usage_after <= 350 * MB and first.trigger == "threshold"
    for i in range(60):  # usage climbs back above emergency at once
        store[f"new-{i}"] = {"status": "done", "result": "n" * (2 * MB)}
    clock.advance(1)
    assert probe().usage >= 450 * MB
    again = monitor.tick().emergency  # the very next sample acts: no cooldown after success
    assert again is not None and again.usage_after is not None
    assert again.usage_after <= 350 * MB
    assert monitor.controller.backoff_left(clock()) is None
    assert [r.kind for r in monitor.recent_cleanups] == ["emergency"] * 2


def test_emergency_never_evicts_active_jobs(clock: FakeClock, fake_reclaim: FakeReclaim) -> None:
    manager = MemoryManager(make_policy(), clock=clock, reclaim=fake_reclaim)
    store = fill(manager, "jobs", done=10, running=5, size=2 * MB)
    manager.probe = FakeProbe("490MB", limit="512MB")  # far above what the stores hold
    monitor = Monitor(manager)
    with capture_evictions(manager) as events:
        report = monitor.emergency(forced=True)
    assert len(events) == 10
    assert sorted(store) == [f"run-{i}" for i in range(5)]
    assert all(store[f"run-{i}"]["result"] is not None for i in range(5))
    assert "nothing left to evict" in report.note and "5 active" in report.note


def test_fragmentation_stops_after_one_round_without_emptying_the_stores(
    monitor: Monitor, manager: MemoryManager, probe: FakeProbe, clock: FakeClock,
    caplog: pytest.LogCaptureFixture, fake_reclaim: FakeReclaim
) -> None:
    caplog.set_level(logging.INFO, logger="memguard")
    store = fill(manager, "jobs", done=200, size=MB)
    probe.set("480MB")  # and it will not move, whatever is evicted
    result = monitor.tick()
    report = result.emergency
    assert report is not None
    assert 130 <= report.evicted <= 131  # one round: 480 - 350 = 130MB by estimate
    assert len(store) >= 69
    # a trim before evicting, quick after, then full before blaming fragmentation
    assert fake_reclaim.calls == 3
    assert report.usage_before == report.usage_after == parse_size("480MB")
    assert report.note.startswith("stopped: evicting ~")
    assert "fragmentation" in report.note
    logged = [r for r in caplog.records if r.levelno == logging.WARNING and
              "stopped: evicting" in r.getMessage()]
    assert len(logged) == 1
    # later ticks, past the cooldown, do not keep evicting at the same usage...
    for _ in range(5):
        clock.advance(60)
        assert monitor.tick().emergency is None
    assert len(store) >= 69
    # ...until usage grows again
    probe.set("510MB")
    clock.advance(60)
    assert monitor.tick().emergency is not None


def test_fragmentation_diagnosis_uses_the_heap_figure(
    monitor: Monitor, manager: MemoryManager, probe: FakeProbe
) -> None:
    store = fill(manager, "jobs", done=200, size=MB)
    probe.set("480MB", heap="300MB")

    real_evict = manager.evict_bytes

    def evict_and_free_heap(amount: int, **kw: Any) -> list[Any]:
        events = real_evict(amount, **kw)
        probe.set("480MB", heap="170MB")  # the heap gave the results back, RSS did not
        return events

    manager.evict_bytes = evict_and_free_heap  # type: ignore[method-assign]
    report = monitor.emergency(forced=True)
    assert "heap 300.0MB -> 170.0MB" in report.note
    assert "cannot return their pages" in report.note
    assert len(store) < 200


def test_emergency_rounds_are_bounded(clock: FakeClock, fake_reclaim: FakeReclaim) -> None:
    manager = MemoryManager(make_policy(), clock=clock, reclaim=fake_reclaim)
    store = fill(manager, "jobs", done=300, size=MB)
    # 60% of each round's estimate comes back: enough to go on, never enough to finish
    probe = StoreProbe(manager, base=200 * MB, efficiency=0.6)
    manager.probe = probe
    monitor = Monitor(manager)
    report = monitor.emergency(forced=True)
    assert fake_reclaim.calls == 1 + MAX_ROUNDS  # a trim before evicting, then one per round
    assert report.usage_after is not None and report.usage_after > 350 * MB
    assert f"after {MAX_ROUNDS} rounds" in report.note
    assert len(store) > 0


def test_a_trim_before_evicting_spares_the_results_when_it_is_enough(
    monitor: Monitor, manager: MemoryManager, probe: FakeProbe, fake_reclaim: FakeReclaim
) -> None:
    """Free pages the allocator holds go back first: no result is evicted for them."""
    store = fill(manager, "jobs", done=200, size=MB)
    probe.set("480MB")
    fake_reclaim.then = lambda: probe.set("340MB")  # the trim alone gets under 350MB
    report = monitor.tick().emergency
    assert report is not None and report.evicted == 0 and len(store) == 200
    assert fake_reclaim.calls == 1
    assert (report.usage_before, report.usage_after) == (parse_size("480MB"),
                                                        parse_size("340MB"))
    assert "a trim gave back ~140.0MB before evicting" in report.note


def test_a_trim_before_evicting_lowers_what_is_evicted(
    monitor: Monitor, manager: MemoryManager, probe: FakeProbe, fake_reclaim: FakeReclaim
) -> None:
    """The trim gives back 40MB of 480MB: the round evicts 90MB to reach 350MB, not 130MB."""
    store = fill(manager, "jobs", done=200, size=MB)
    probe.set("480MB")
    falls = iter(["440MB"])
    fake_reclaim.then = lambda: probe.set(next(falls, "350MB"))
    report = monitor.tick().emergency
    assert report is not None
    assert 90 <= report.evicted <= 91 and len(store) >= 109
    assert report.usage_after == parse_size("350MB")


def test_forced_emergency_below_target_still_reclaims(
    monitor: Monitor, manager: MemoryManager, fake_reclaim: FakeReclaim
) -> None:
    store = fill(manager, "jobs", done=5)
    report = monitor.emergency(forced=True)
    assert report.evicted == 0 and len(store) == 5
    assert fake_reclaim.calls == 1
    assert report.usage_before == report.usage_after == parse_size("300MB")


def test_critical_calls_the_recycle_hook_once_when_enabled(
    manager: MemoryManager, monitor: Monitor, probe: FakeProbe, clock: FakeClock,
    caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    monitor.on_recycle = lambda: calls.append(1)
    probe.set("600MB")
    monitor.tick()
    assert calls == []  # recycle is off by default
    probe.set("300MB")
    monitor.tick()
    manager.load_policy(make_policy(recycle=True))
    caplog.set_level(logging.INFO, logger="memguard")
    probe.set("600MB")
    results = []
    for _ in range(3):
        clock.advance(60)
        results.append(monitor.tick().recycled)
    assert results == [True, False, False] and calls == [1]
    assert any(r.levelno == logging.CRITICAL and "recycle" in r.getMessage()
               for r in caplog.records)
    probe.set("300MB")
    monitor.tick()
    probe.set("600MB")
    assert monitor.tick().recycled and calls == [1, 1]


# --------------------------------------------------------------------------------------------
# Robustness


def test_a_failing_step_is_logged_and_the_others_still_run(
    manager: MemoryManager, monitor: Monitor, probe: FakeProbe,
    caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> MemorySample:
        raise OSError("probe exploded")

    manager.probe = broken
    result = monitor.tick()
    assert result.sample is None and result.cleanup is not None
    assert result.errors == ("probe: OSError: probe exploded",)
    assert monitor.failures == 1
    assert any(r.exc_info for r in caplog.records if "'probe' failed" in r.getMessage())
    manager.probe = probe
    assert monitor.tick().errors == ()


def test_thread_survives_failing_probe_rule_callback_and_hook(
    manager: MemoryManager, probe: FakeProbe
) -> None:
    store = fill(manager, "jobs", done=50)
    calls = {"probe": 0}

    def flaky() -> MemorySample:
        calls["probe"] += 1
        if calls["probe"] % 2:
            raise RuntimeError("flaky probe")
        return probe()

    def bad_rule(index: Any, ctx: Any) -> Any:
        raise ValueError("bad rule")

    def bad_callback(event: Any) -> None:
        raise KeyError("bad callback")

    def bad_hook() -> None:
        raise RuntimeError("bad hook")

    from memguard.stores.building import handle

    h = handle(store)
    h.pipeline = h.pipeline | bad_rule
    manager.on_evict(bad_callback)
    manager.load_policy(make_policy(recycle=True))
    manager.probe = flaky
    probe.set("600MB")
    monitor = manager.setup_memory_monitoring(0.01)
    monitor.on_recycle = bad_hook
    assert wait_until(lambda: monitor.ticks >= 6)
    assert monitor.running and monitor.failures >= 3
    assert [t.name for t in threading.enumerate()].count(THREAD_NAME) == 1
    assert monitor.stop(timeout=5)
    assert not monitor.running


def test_start_is_idempotent_and_stop_leaves_no_thread(manager: MemoryManager) -> None:
    monitor = manager.setup_memory_monitoring("1h")
    first = monitor._loop.thread
    monitor.start()
    manager.start()
    assert monitor._loop.thread is first
    assert [t.name for t in threading.enumerate()].count(THREAD_NAME) == 1
    assert wait_until(lambda: monitor.ticks >= 1)
    began = time.monotonic()
    assert monitor.stop(timeout=5)
    assert time.monotonic() - began < 1.0  # an hour's wait is interrupted at once
    assert THREAD_NAME not in [t.name for t in threading.enumerate()]
    assert not monitor.running and not monitor.started
    monitor.start()  # restartable
    assert monitor.running
    monitor.stop()


def test_set_interval_reads_durations_and_wakes_the_thread(manager: MemoryManager) -> None:
    monitor = manager.setup_memory_monitoring("1h")
    assert monitor.interval == 3600
    assert wait_until(lambda: monitor.ticks >= 1)
    monitor.set_interval("50ms")
    assert monitor.interval == 0.05
    assert wait_until(lambda: monitor.ticks >= 4)
    monitor.set_interval(None)
    assert monitor.interval == 120
    with pytest.raises(ValueError):
        monitor.set_interval(0)
    monitor.stop()


# --------------------------------------------------------------------------------------------
# SIGUSR1


@pytest.fixture
def sigusr1() -> Iterator[None]:
    if not hasattr(signal, "SIGUSR1"):
        pytest.skip("no SIGUSR1 on this platform")
    before = signal.getsignal(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGUSR1, before)


@pytest.mark.usefixtures("sigusr1")
def test_sigusr1_triggers_an_emergency_cleanup_when_enabled(manager: MemoryManager) -> None:
    manager.load_policy(make_policy(signal_cleanup=True))
    store = fill(manager, "jobs", done=5)
    monitor = manager.setup_memory_monitoring("1h")
    assert wait_until(lambda: monitor.ticks >= 1)
    assert signal.getsignal(signal.SIGUSR1) == monitor._on_signal
    assert not monitor.recent_cleanups  # 300MB: nothing to do until asked
    os.kill(os.getpid(), signal.SIGUSR1)
    assert wait_until(lambda: len(monitor.recent_cleanups) == 1, timeout=5)
    assert monitor.recent_cleanups[0].kind == "emergency"
    assert len(store) == 5
    monitor.stop()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # put back


@pytest.mark.usefixtures("sigusr1")
def test_no_signal_handler_unless_enabled(manager: MemoryManager) -> None:
    monitor = manager.setup_memory_monitoring("1h")
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    monitor.stop()


@pytest.mark.usefixtures("sigusr1")
def test_an_app_servers_handler_is_never_replaced(
    manager: MemoryManager, caplog: pytest.LogCaptureFixture
) -> None:
    def server_handler(signum: int, frame: Any) -> None:
        pass

    caplog.set_level(logging.INFO, logger="memguard")
    signal.signal(signal.SIGUSR1, server_handler)
    manager.load_policy(make_policy(signal_cleanup=True))
    monitor = manager.setup_memory_monitoring("1h")
    assert signal.getsignal(signal.SIGUSR1) is server_handler
    # One plain INFO line naming who keeps it, without the handler's repr.
    said = [r for r in caplog.records if "SIGUSR1 stays with" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    assert f"in pid {os.getpid()}" in said[0].getMessage()
    assert "server_handler" not in said[0].getMessage()
    monitor.stop()
    assert signal.getsignal(signal.SIGUSR1) is server_handler


@pytest.mark.usefixtures("sigusr1")
def test_no_handler_from_a_worker_thread(manager: MemoryManager) -> None:
    manager.load_policy(make_policy(signal_cleanup=True))
    started = threading.Thread(target=manager.start)
    started.start()
    started.join(5)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    manager.stop()


# --------------------------------------------------------------------------------------------
# Stats and questions


def test_stats_growth_time_to_limit_and_json(
    monitor: Monitor, manager: MemoryManager, probe: FakeProbe, clock: FakeClock
) -> None:
    store = fill(manager, "diagram", done=2, running=1)
    # +10MB a minute from 300MB, sampled every second (the figure looks at the last seconds)
    for second in range(5):
        probe.set(300 * MB + second * 10 * MB // 60)
        monitor.tick()
        clock.advance(1)
    probe.set(300 * MB + 5 * 10 * MB // 60)
    stats = monitor.stats()
    assert isinstance(stats, MemoryStats)
    assert stats.growth_per_minute == pytest.approx(10 * MB, rel=1e-4)
    assert stats.time_to_limit == pytest.approx((512 * MB - stats.sample.usage) / (10 * MB) * 60,
                                                rel=1e-4)
    probe.set(350 * MB)
    stats = monitor.stats()
    assert stats.level == "ok" and not stats.monitoring
    assert stats.thresholds is not None and stats.thresholds.emergency == 450 * MB
    data = json.loads(json.dumps(stats.to_dict()))
    assert data["level"] == "ok"
    assert data["sample"]["usage"] == 350 * MB
    assert data["thresholds"]["critical"] == 500 * MB
    assert data["stores"] == [{"name": "diagram", "jobs": 3, "active": 1, "pinned": 0,
                               "bytes": data["stores"][0]["bytes"], "unweighed": 1,
                               "evictions": {}}]
    assert data["growth_per_minute"] > 0
    assert set(data) == {"sample", "level", "thresholds", "stores", "recent_cleanups",
                         "growth_per_minute", "time_to_limit", "monitoring", "totals",
                         "controller"}
    assert data["totals"] == {"cleanups": {}, "freed_estimate_bytes": 0, "reclaimed_bytes": 0,
                              "peak_usage_bytes": 350 * MB}
    assert manager.get_memory_stats().sample.usage == 350 * MB
    assert len(store) == 3


def test_time_to_limit_none_without_growth_or_limit(
    clock: FakeClock, fake_reclaim: FakeReclaim
) -> None:
    probe = FakeProbe("100MB")
    manager = MemoryManager(Policy(memory=MemoryPolicy(
        limit=None, warning="400MB", emergency="450MB", emergency_target="350MB",
        critical="500MB")), clock=clock, probe=probe, reclaim=fake_reclaim)
    monitor = Monitor(manager)
    for _ in range(3):
        monitor.tick()
        clock.advance(1)
    stats = monitor.stats()
    assert stats.growth_per_minute == 0 and stats.time_to_limit is None
    assert stats.thresholds is not None and stats.thresholds.limit is None


def test_growth_rate_is_a_least_squares_slope() -> None:
    assert growth_rate([]) is None
    assert growth_rate([(0.0, 5)]) is None
    assert growth_rate([(1.0, 5), (1.0, 9)]) is None
    assert growth_rate([(0.0, 0), (60.0, 120), (120.0, 240)]) == pytest.approx(120)
    assert growth_rate([(0.0, 10), (60.0, 0), (120.0, 20)]) == pytest.approx(5)


def test_is_high(monitor: Monitor, manager: MemoryManager, probe: FakeProbe) -> None:
    assert not monitor.is_high()
    probe.set("401MB")
    assert monitor.is_high() and manager.is_memory_high()
    assert monitor.is_high(400) and not monitor.is_high(402)
    assert monitor.level == "ok"  # a question never moves the level


def test_percentages_resolve_against_the_probes_limit(
    clock: FakeClock, fake_reclaim: FakeReclaim
) -> None:
    probe = FakeProbe("700MB", limit="1GB")
    policy = Policy(memory=MemoryPolicy(limit="auto", warning="60%", emergency="80%",
                                        emergency_target="50%", critical="95%"))
    manager = MemoryManager(policy, clock=clock, probe=probe, reclaim=fake_reclaim)
    monitor = Monitor(manager)
    assert monitor.tick().level == "warning"
    t = monitor.thresholds(probe())
    assert (t.warning, t.emergency, t.limit) == (round(0.6 * 2**30), round(0.8 * 2**30), 2**30)


def test_policy_changed_rereads_thresholds(
    monitor: Monitor, manager: MemoryManager, probe: FakeProbe
) -> None:
    probe.set("380MB")
    assert monitor.tick().level == "ok"
    manager.load_policy(make_policy(warning="350MB"))  # the manager calls policy_changed()
    assert monitor.tick().level == "warning"


def test_start_after_a_stop_that_timed_out_mid_tick(manager: MemoryManager,
                                                    probe: FakeProbe) -> None:
    entered, release = threading.Event(), threading.Event()

    def stuck() -> MemorySample:
        entered.set()
        release.wait(5)
        return probe()

    manager.probe = stuck
    monitor = manager.setup_memory_monitoring("1h")
    assert entered.wait(5)
    assert monitor.stop(timeout=0.05) is False  # the tick is still running
    old = monitor._loop.thread
    release.set()
    manager.probe = probe
    monitor.start()  # waits for the tick, then starts afresh
    assert monitor.running and monitor._loop.thread is not old
    assert old is not None and wait_until(lambda: not old.is_alive())
    assert [t.name for t in threading.enumerate()].count(THREAD_NAME) == 1
    assert monitor.stop()


def test_a_manual_cleanup_does_not_wait_for_a_tick_stuck_in_a_callback(
        manager: MemoryManager, monitor: Monitor, clock: FakeClock) -> None:
    store = fill(manager, "aging", done=3)
    fill(manager, "other", done=4)
    manager.load_policy(Policy(memory=manager.policy.memory, stores={"aging": {"max_age": "1m"}}))
    clock.advance(120)
    entered, release = threading.Event(), threading.Event()

    def slow(event: Any) -> None:
        if event.store == "aging":
            entered.set()
            release.wait(30)  # the periodic pass's callback blocks the tick

    manager.on_evict(slow)
    ticking = threading.Thread(target=monitor.tick)
    ticking.start()
    try:
        assert entered.wait(10)
        report = monitor.emergency(forced=True)  # from another thread, while the tick waits
        assert ticking.is_alive() and not release.is_set()
        assert report.trigger == "forced" and report.usage_before is not None
    finally:
        release.set()
        ticking.join(10)
    assert len(store) == 0


@pytest.mark.parametrize("fatal", [SystemExit, KeyboardInterrupt, asyncio.CancelledError],
                         ids=["SystemExit", "KeyboardInterrupt", "CancelledError"])
def test_thread_survives_base_exceptions_from_callbacks_and_rules(
        manager: MemoryManager, probe: FakeProbe, fatal: type[BaseException]) -> None:
    store = fill(manager, "jobs", done=200)

    def fatal_callback(event: Any) -> None:
        raise fatal()

    def fatal_rule(index: Any, ctx: Any) -> Any:
        raise fatal()

    from memguard.stores.building import handle

    handle(store).add_rule(fatal_rule)
    manager.on_evict(fatal_callback)
    probe.set("460MB")  # at emergency: every sample evicts, every eviction calls back
    monitor = manager.setup_memory_monitoring(0.01)
    try:
        assert wait_until(lambda: monitor.failures >= 3 and monitor.ticks >= 6)
        assert monitor.running and monitor.restarts == 0
    finally:
        assert monitor.stop(timeout=5)


def test_a_monitor_loop_that_dies_restarts_itself(manager: MemoryManager,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = manager.setup_memory_monitoring("1h")
    assert wait_until(lambda: monitor.ticks >= 1)
    real_wait = monitor._loop.wait
    deaths = []

    def dying_wait(stop: threading.Event) -> None:
        if not deaths:
            deaths.append(1)
            raise SystemExit("something escaped every guard")
        real_wait(stop)

    monkeypatch.setattr(monitor._loop, "wait", dying_wait)
    monitor.set_interval("1h")  # wake the thread: it waits (and dies) at once
    assert wait_until(lambda: monitor.restarts == 1 and monitor.running and monitor.ticks >= 2)
    # the dead thread ends right after starting its successor: one monitor thread remains
    assert wait_until(lambda: [t.name for t in threading.enumerate()].count(THREAD_NAME) == 1)
    assert monitor.stop(timeout=5)


_SIGNAL_LET_GO = textwrap.dedent("""\
    import os, signal, threading, time
    from memguard import MemoryManager, Policy, MemoryPolicy
    manager = MemoryManager(Policy(memory=MemoryPolicy(signal_cleanup=True)))
    manager.start()
    assert signal.getsignal(signal.SIGUSR1) == manager.monitor._on_signal
    stopper = threading.Thread(target=manager.stop)  # a thread that cannot restore SIG_DFL
    stopper.start()
    stopper.join()
    os.kill(os.getpid(), signal.SIGUSR1)  # must act as if memguard had never been there
    time.sleep(5)
    print("swallowed", flush=True)
""")


def test_sigusr1_is_never_swallowed_once_memguard_lets_go() -> None:
    if not hasattr(signal, "SIGUSR1"):
        pytest.skip("no SIGUSR1 on this platform")
    child = subprocess.run([sys.executable, "-c", _SIGNAL_LET_GO], capture_output=True,
                           text=True, timeout=60)
    assert "swallowed" not in child.stdout, child.stderr
    assert child.returncode == -signal.SIGUSR1, (child.returncode, child.stderr)
