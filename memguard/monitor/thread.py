"""The memory monitor: a daemon thread that samples memory and steps in before the limit.

Two clocks drive it (DESIGN section 4). Memory is **sampled** every ``sample_interval`` (250 ms
by default, four times as often at or above ``warning``, sooner when usage grows fast
enough to reach ``emergency`` before then: `Monitor.next_wait`, and at once when the stores
take in a burst: `memguard.stores.intake`): each sample moves the level
(with hysteresis, each change logged once) and goes to the emergency controller
(`memguard.monitor.controller`), which cleans up at ``emergency``, earlier when the recent
growth says usage will cross it before the next sample, and always at ``critical``. The
periodic **pass** of every store's pipeline runs every ``check_interval`` (2 minutes by
default), and a full ``gc.collect()`` every ``gc_interval``. A process growing 50 MB/s is seen
within a second, never two minutes later.

Time comes only from ``manager.clock`` and memory only from the probe, so every decision can be
driven synchronously in tests with `memguard.testing.FakeClock` and `FakeProbe` through
`Monitor.tick`; the thread is only a loop around `tick`.

`Monitor` puts together pieces that each read alone, one module each in this package: the
thread, fork lock and recycle requests (`daemon`), the probe, thresholds, growth and the
snapshot (`readings`), one sample's steps, when each is due and the cleanups' record (`tick`),
the level and its log lines (`levels`), the emergency controller (`controller`), SIGUSR1 and
the other outside triggers (`triggers`). It reaches its manager only through `host.MonitorHost`.
"""

from __future__ import annotations

import atexit
import collections
import os
import weakref
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, Optional, Union

from memguard._logging import logger
from memguard.eviction.events import CleanupReport
from memguard.memory.reclaim import Reclaim
from memguard.memory.samples import MemorySample, Probe
from memguard.monitor.controller import EmergencyController
from memguard.monitor.daemon import DaemonLoop, ForkLocks, ForkSafeLock, Recycler
from memguard.monitor.kernel import KernelWake
from memguard.monitor.levels import next_level, rank
from memguard.monitor.readings import MemoryStats, Readings, time_to_limit
from memguard.monitor.tick import CleanupRecord, Cleanups, Schedule, Ticker, TickResult
from memguard.monitor.triggers import SignalTrigger
from memguard.policy.options import MemoryPolicy
from memguard.policy.thresholds import Thresholds
from memguard.policy.units import format_duration

if TYPE_CHECKING:
    from memguard.monitor.host import MonitorHost

THREAD_NAME: Final = "memguard-monitor"

_EXIT_TIMEOUT: Final = 2.0
"""How long the interpreter's exit waits for a monitor in the middle of a tick (seconds)."""

_FORK_TIMEOUT: Final = 5.0
"""How long ``fork()`` waits for a tick in progress to finish before forking anyway."""



_monitors: weakref.WeakSet[Monitor] = weakref.WeakSet()


def _stop_all_at_exit() -> None:
    for monitor in list(_monitors):
        monitor.stop(timeout=_EXIT_TIMEOUT)


def _before_fork() -> None:
    for monitor in list(_monitors):
        monitor._before_fork()


def _after_fork_in_parent() -> None:
    for monitor in list(_monitors):
        monitor._after_fork_in_parent()


def _after_fork_in_child() -> None:
    for monitor in list(_monitors):
        monitor._after_fork_in_child()


atexit.register(_stop_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )




class Monitor:
    """Watches memory for one `MonitorHost` and cleans up its stores under pressure.

    Created by the manager (`MemoryManager.setup_memory_monitoring`); usable directly. All
    decisions happen in `tick`, which the thread calls on every sample and tests call by hand.
    Safe to call from any thread: ticks and emergencies are serialized.

    `on_recycle`, when set (by the gunicorn integration), is called once each time memory
    reaches ``critical`` if the policy says ``recycle = true`` and no store holds an active job
    the restart would lose: it should ask the server to replace this worker gracefully. The
    monitor never kills anything itself.

    Its parts: `readings` (probe, thresholds, growth), `schedule` (what is due when),
    `controller` and `cleanups` (emergency cleanups) with their `record`; the steps of a tick
    are `memguard.monitor.tick`'s, the thread `memguard.monitor.daemon`'s.
    """

    def __init__(self, manager: MonitorHost, *, history: int = 360, cleanups: int = 20) -> None:
        self.manager = manager
        self.on_recycle: Optional[Callable[[], None]] = None
        self.controller = EmergencyController(manager, reclaimer=self._reclaim)
        self.readings = Readings(lambda: self.policy, lambda: self.manager.probe,
                                 history=history)
        self.schedule = Schedule(lambda: self.policy, lambda: self.manager.evicted_bytes)
        self.record = CleanupRecord(cleanups)
        self.cleanups = Cleanups(self.controller, self.readings, self.record, self.schedule,
                                 clock=lambda: self.manager.clock(), take=self._take_inside)
        recycler = Recycler(lambda: self.on_recycle, lambda: sum(
            store.stats().active for store in self.manager.handles()))
        self._signals = SignalTrigger(self._wants_signal)  # SIGUSR1
        self._ticker = Ticker(manager, self.readings, self.schedule, self.record, self.cleanups,
                              recycler, self._signals, reclaim=self._reclaim,
                              horizon=self._wait_seconds, wake=lambda: self._loop.wake())
        self._work = ForkSafeLock()  # serializes ticks
        self._loop = DaemonLoop(THREAD_NAME, step=self.tick, interval=self._wait_seconds,
                                polling=lambda: self._signals.installed,
                                interrupted=lambda: self._signals.pending,
                                on_failure=self._failed)
        # What a fork must not leave held, in the order the code takes them: a tick's lock,
        # then a cleanup's, then the record's.
        self._forks = ForkLocks(self._work, self.cleanups.guard, self.record.guard)
        _monitors.add(self)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (f"<Monitor {state} level={self.level} "
                f"sample={format_duration(self.sample_interval)} "
                f"pass={format_duration(self.interval)}>")

    # -- configuration ----------------------------------------------------------------------

    @property
    def policy(self) -> MemoryPolicy:
        """The manager's current memory policy (read afresh each time)."""
        return self.manager.policy.memory

    @property
    def interval(self) -> float:
        """Seconds between periodic passes: `set_interval`'s value, else check_interval."""
        return self.schedule.pass_interval

    @property
    def sample_interval(self) -> float:
        """Seconds between samples now: sample_interval, a quarter of it at warning and above,
        and never longer than the pass interval."""
        return self.schedule.sample_interval(self.level)

    def set_interval(self, value: Union[float, str, None]) -> None:
        """Run the periodic pass every `value` (seconds or a duration such as ``"30s"``);
        None = the policy's check_interval. Sampling keeps its own interval.

        Takes effect at once: a waiting thread wakes and waits the new interval.
        """
        self.schedule.set_pass_interval(value)
        self._loop.wake()

    def policy_changed(self) -> None:
        """Re-read thresholds, intervals, probe and the signal setting from the policy.

        The manager calls this after `apply_policy`; the thread picks the new values up at
        once. An interval set with `set_interval` stays in force.
        """
        with self._work.lock:
            self.readings.reset()
        self._update_signal_handler()
        self._loop.wake()

    @property
    def probe(self) -> Probe:
        """The manager's probe when it has one, else one built from the policy's scope/limit."""
        return self.readings.probe

    @property
    def history(self) -> collections.deque[tuple[float, int]]:
        """(time, usage) of recent samples, oldest first."""
        return self.readings.history

    def thresholds(self, sample: Optional[MemorySample] = None) -> Thresholds:
        """The policy's thresholds in bytes, percentages resolved against the known limit
        (see `memguard.monitor.readings.Readings.thresholds`)."""
        return self.readings.thresholds(sample)

    # -- state --------------------------------------------------------------------------------

    @property
    def level(self) -> str:
        """The current level: ``"ok"``, ``"warning"``, ``"emergency"`` or ``"critical"``."""
        return self._ticker.lines.level

    @property
    def ticks(self) -> int:
        """How many ticks ran so far."""
        return self._ticker.ticks

    @property
    def failures(self) -> int:
        """How many steps of ticks (probe, pipeline, gc, emergency, hooks) raised so far."""
        return self._ticker.failures

    @property
    def last_sample(self) -> Optional[MemorySample]:
        """The newest sample (None before the first)."""
        return self._ticker.last_sample

    @property
    def recent_cleanups(self) -> collections.deque[CleanupReport]:
        """Recent emergency cleanups and evicting periodic passes, oldest first."""
        return self.record.recent

    @property
    def totals(self) -> dict[str, Any]:
        """Running totals since start: cleanups by kind, bytes evicted (estimate) and given
        back (measured, when positive): the Prometheus counters. The bytes evicted count
        every eviction from this process's stores (inserts over a count or byte bound,
        passes, emergencies), as the manager keeps them, not only the cleanups'."""
        return {**self.record.totals, "freed_estimate_bytes": self.manager.evicted_bytes}

    @property
    def running(self) -> bool:
        """True while the monitor thread is alive."""
        return self._loop.running

    @property
    def started(self) -> bool:
        """True from `start` until `stop`: the monitor is meant to be running.

        ``started and not running`` means the thread died and could not be restarted; health
        checks report that.
        """
        return self._loop.wanted

    @property
    def restarts(self) -> int:
        """How many times the thread died and was started again."""
        return self._loop.restarts

    # -- the thread ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the daemon thread ``memguard-monitor`` (idempotent); it ticks at once."""
        with self._work.lock:
            self._loop.wanted = True
            if self.running and not self._loop.stop_event.is_set():
                return
            self._update_signal_handler()
            logger.debug("memguard: monitor starting: samples every %s, passes every %s",
                         format_duration(self.sample_interval), format_duration(self.interval))
            if self._ticker.kernel is None:
                self._ticker.kernel = KernelWake(self._loop.wake)
            self._loop.start()

    def stop(self, timeout: Optional[float] = 5.0) -> bool:
        """Stop the thread and wait up to `timeout` seconds for it; True once it has ended.

        Prompt: the thread waits on an event that `stop` sets. A tick in progress finishes
        first. Called from the monitor thread itself (a callback), it only asks.
        """
        self._loop.wanted = False
        self._signals.remove()
        self.manager.intake.disarm()
        stopped = self._loop.stop(timeout)
        kernel, self._ticker.kernel = self._ticker.kernel, None
        if kernel is not None:
            kernel.close()
        return stopped

    def next_wait(self) -> float:
        """Seconds until the next sample: the sample interval, or less when usage is growing
        fast enough to cross ``emergency`` before then (half the time it would take)."""
        return self.schedule.next_wait(self.level, self.last_sample,
                                       self.readings.growth(),
                                       lambda sample: self.thresholds(sample).emergency)

    def _wait_seconds(self) -> float:
        try:
            return self.next_wait()
        except Exception:  # a policy without a resolvable limit: the plain interval
            return self.sample_interval

    def _failed(self) -> None:
        self._ticker.failures += 1

    # -- one sample ---------------------------------------------------------------------------

    def tick(self) -> TickResult:
        """One synchronous step; what the thread does on every sample.

        Sample and move between levels (each change logged once, "quota exceeded" once past
        the limit); the periodic pass over every store when ``check_interval`` has passed since
        the last (and then a measured reclaim once enough has been evicted); ``gc.collect()``
        when ``gc_interval`` has passed; the emergency controller's decision on this sample
        (or a SIGUSR1 request); at ``critical``, the recycle hook when enabled; the periodic
        summary line. A step that raises is logged with its traceback, counted in `failures`,
        and the other steps still run (`memguard.monitor.tick`).
        """
        with self._work.lock:
            return self._ticker.tick()

    def _take_inside(self, now: float, sample: MemorySample) -> None:
        """A sample an emergency cleanup took between its rounds: recorded, level followed."""
        self._ticker.take(now, sample, extras=False)

    def _reclaim(self, *, full: bool = True) -> Reclaim:
        """Give memory back with the manager's reclaim (`memguard.memory.reclaim.reclaim`
        unless one was injected, as `memguard.testing.FakeReclaim` is in tests)."""
        return self.manager.reclaim(full=full)

    # -- questions ------------------------------------------------------------------------------

    def emergency(self, forced: bool = False) -> CleanupReport:
        """Clean up to ``emergency_target`` now: evict, reclaim, measure (see
        `memguard.monitor.controller`). Unless `forced`, refused while the controller backs off
        after a round that could not lower usage (the report's note says so; nothing is
        recorded).
        """
        return self.cleanups.emergency(forced)

    def stats(self) -> MemoryStats:
        """A fresh `MemoryStats` (samples now; does not change the level or log anything)."""
        sample = self.probe()
        now = self.manager.clock()
        thresholds = self.thresholds(sample)
        level = next_level(self.level, sample.usage, thresholds)
        cleanups, totals = self.record.snapshot()
        totals["freed_estimate_bytes"] = self.manager.evicted_bytes  # every eviction's
        peak = self.readings.peak
        totals["peak_usage_bytes"] = sample.usage if peak is None else max(peak, sample.usage)
        growth = self.readings.shown_growth(now, sample.usage)
        limit = sample.limit if sample.limit is not None else thresholds.limit
        return MemoryStats(
            sample=sample, level=level, thresholds=thresholds,
            stores=tuple(store.stats() for store in self.manager.handles()),
            recent_cleanups=cleanups, growth_per_minute=growth,
            time_to_limit=time_to_limit(sample.usage, limit, growth),
            monitoring=self.running, totals=totals,
            controller={**self.controller.state(now),
                        "sample_interval_seconds": self.sample_interval,
                        "pass_interval_seconds": self.interval},
        )

    def is_high(self, threshold_mb: Optional[float] = None) -> bool:
        """Usage now above `threshold_mb` MiB when given, else at warning level or above."""
        sample = self.probe()
        if threshold_mb is not None:
            return sample.usage > threshold_mb * 2**20
        level = next_level(self.level, sample.usage, self.thresholds(sample))
        return rank(level) >= rank("warning")

    # -- signals ------------------------------------------------------------------------------

    @property
    def _on_signal(self) -> Callable[[int, Optional[FrameType]], None]:
        """The SIGUSR1 handler memguard installs (see `memguard.monitor.triggers`)."""
        return self._signals.on_signal

    def _wants_signal(self) -> bool:
        return self._loop.wanted and self.policy.signal_cleanup

    def _update_signal_handler(self) -> None:
        if self._signals.update():
            self._loop.wake()  # re-enter the wait in signal-polling slices

    # -- fork -----------------------------------------------------------------------------------

    def _before_fork(self) -> None:
        # Let a tick or cleanup in progress finish (bounded: fork goes ahead).
        self._forks.hold(_FORK_TIMEOUT)

    def _after_fork_in_parent(self) -> None:
        self._forks.release()

    def _after_fork_in_child(self) -> None:
        """Fresh locks; no history; restart the thread if it was running in the parent."""
        self._forks.renew()
        self.readings.forget()
        self._loop.relaunch()
