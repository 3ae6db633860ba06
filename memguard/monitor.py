"""The memory monitor: a daemon thread that samples memory and steps in before the limit.

Two clocks drive it (DESIGN section 4). Memory is **sampled** every ``sample_interval`` (1 s
by default, four times as often at or above ``warning``, and sooner when usage grows fast
enough to reach ``emergency`` before then: `Monitor.next_wait`): each sample moves the level (with
hysteresis, each change logged once) and goes to the emergency controller
(`memguard.controller`), which cleans up at ``emergency``, earlier when the recent growth says
usage will cross it before the next sample, and always at ``critical``. The periodic **pass**
of every store's pipeline runs every ``check_interval`` (2 minutes by default), and a full
``gc.collect()`` every ``gc_interval``. A process growing 50 MB/s is seen within a second,
never two minutes later.

Time comes only from ``manager.clock`` and memory only from the probe, so every decision can be
driven synchronously in tests with `memguard.testing.FakeClock` and `FakeProbe` through
`Monitor.tick`; the thread is only a loop around `tick`.
"""

from __future__ import annotations

import atexit
import collections
import gc
import logging
import os
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, Optional, Union

import attrs

from memguard._logging import announce, logger
from memguard._units import format_duration, parse_duration
from memguard.controller import (
    FRAGMENTATION_RATIO,
    MAX_ROUNDS,
    EmergencyController,
)
from memguard.daemon import DaemonLoop
from memguard.events import CleanupReport
from memguard.levels import HYSTERESIS, LEVELS, next_level, rank, raw_level
from memguard.lines import LevelLines, heroku_line
from memguard.memory import (
    CgroupProbe,
    MemorySample,
    Probe,
    ProcessProbe,
    Reclaim,
    heap_bytes,
    reclaim,
)
from memguard.options import MemoryPolicy, Thresholds
from memguard.readings import Readings
from memguard.signals import SignalTrigger
from memguard.stats import MemoryStats, growth_rate, time_to_limit

if TYPE_CHECKING:
    from memguard._manager import MemoryManager

__all__ = [
    "FRAGMENTATION_RATIO",
    "HYSTERESIS",
    "LEVELS",
    "MAX_ROUNDS",
    "THREAD_NAME",
    "MemoryStats",
    "Monitor",
    "TickResult",
    "growth_rate",
    "heroku_line",
    "next_level",
    "raw_level",
]

TRIM_AFTER: Final = 32 * 2**20
"""Once this much has been evicted (by estimate, by passes or by inserts over a bound) since the
last reclaim, the next tick runs `reclaim()` and measures it: without it, glibc keeps the freed
arenas and a guarded process creeps up between emergencies."""

PRESSURE_SPEEDUP: Final = 4
"""At or above ``warning`` memory is sampled this many times as often."""

THREAD_NAME: Final = "memguard-monitor"

_EXIT_TIMEOUT: Final = 2.0
"""How long the interpreter's exit waits for a monitor in the middle of a tick (seconds)."""

_FORK_TIMEOUT: Final = 5.0
"""How long ``fork()`` waits for a tick in progress to finish before forking anyway."""

_MIN_WAIT: Final = 0.05
"""The shortest wait between two samples (seconds), however fast usage grows."""


@attrs.frozen(slots=True)
class TickResult:
    """What one `Monitor.tick` did, for tests and callers driving the monitor by hand.

    `sample` is None when the probe failed. `cleanup` is the periodic pass when one was due
    (None otherwise, or when it failed), `gc_collected` what the periodic full collection found
    (None when none was due), `emergency` the emergency cleanup when one ran, `held_back` why
    the controller did not act although usage was at or above ``emergency``, `recycled`
    whether the recycle hook was called, and `errors` one line per step that raised (each also
    logged with its traceback).
    """

    at: float
    sample: Optional[MemorySample]
    previous_level: str
    level: str
    cleanup: Optional[CleanupReport] = None
    gc_collected: Optional[int] = None
    emergency: Optional[CleanupReport] = None
    recycled: bool = False
    errors: tuple[str, ...] = ()
    held_back: str = ""


# --------------------------------------------------------------------------------------------
# Process-wide hooks: exit and fork (registered once, for every monitor, through weak refs)

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


# --------------------------------------------------------------------------------------------
# The monitor


class Monitor:
    """Watches memory for one `MemoryManager` and cleans up its stores under pressure.

    Created by the manager (`MemoryManager.setup_memory_monitoring`); usable directly. All
    decisions happen in `tick`, which the thread calls on every sample and tests call by hand.
    Safe to call from any thread: ticks and emergencies are serialized.

    `on_recycle`, when set (by the gunicorn integration), is called once each time memory
    reaches ``critical`` if the policy says ``recycle = true`` and no store holds an active job
    the restart would lose: it should ask the server to replace this worker gracefully. The
    monitor never kills anything itself.
    """

    def __init__(self, manager: MemoryManager, *, history: int = 360, cleanups: int = 20) -> None:
        self.manager = manager
        self.on_recycle: Optional[Callable[[], None]] = None
        self.controller = EmergencyController(manager, reclaimer=self._reclaim)
        self.readings = Readings(lambda: self.policy, lambda: self.manager.probe,
                                 history=history)
        self.recent_cleanups: collections.deque[CleanupReport] = collections.deque(
            maxlen=cleanups)
        """Recent emergency cleanups and evicting periodic passes, oldest first."""
        self.totals: dict[str, Any] = {"cleanups": {}, "freed_estimate_bytes": 0,
                                       "reclaimed_bytes": 0}
        """Running totals since start: cleanups by kind, bytes evicted (estimate) and given
        back (measured, when positive): the Prometheus counters."""
        self.failures = 0
        """How many steps of ticks (probe, pipeline, gc, emergency, hooks) raised so far."""
        self.ticks = 0
        self.last_sample: Optional[MemorySample] = None
        self._interval: Optional[float] = None
        self._work = threading.RLock()  # serializes ticks
        # Serializes cleanups. Apart from `_work`, so that a manual cleanup never waits for a
        # tick busy in its periodic pass (a slow `on_evict` callback, a big store).
        self._cleaning = threading.RLock()
        self._state = threading.Lock()  # guards cleanups and totals against the thread
        self._loop = DaemonLoop(THREAD_NAME, step=self.tick, interval=self._wait_seconds,
                                polling=lambda: self._signals.installed,
                                interrupted=lambda: self._signals.pending,
                                on_failure=self._failed)
        self._fork_held = self._fork_cleaning = False
        # Schedules (manager.clock time); None = not yet.
        self._last_pass: Optional[float] = None
        self._last_gc: Optional[float] = None
        self._last_summary: Optional[float] = None
        self._evicted_at_reclaim = 0  # manager.evicted_bytes at the last reclaim
        self._lines = LevelLines()
        self._recycle_requested = False
        self._recycle_refused = False
        # SIGUSR1.
        self._signals = SignalTrigger(self._wants_signal)
        _monitors.add(self)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (f"<Monitor {state} level={self._lines.level} "
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
        return self._interval if self._interval is not None else self.policy.check_interval

    @property
    def sample_interval(self) -> float:
        """Seconds between samples now: sample_interval, a quarter of it at warning and above,
        and never longer than the pass interval."""
        every = self.policy.sample_interval
        if rank(self._lines.level) >= rank("warning"):
            every /= PRESSURE_SPEEDUP
        return min(every, self.interval)

    def set_interval(self, value: Union[float, str, None]) -> None:
        """Run the periodic pass every `value` (seconds or a duration such as ``"30s"``);
        None = the policy's check_interval. Sampling keeps its own interval.

        Takes effect at once: a waiting thread wakes and waits the new interval.
        """
        if value is None:
            self._interval = None
        else:
            seconds = parse_duration(value)
            if seconds <= 0:
                raise ValueError(f"the monitor interval must be above zero; got {value!r}")
            self._interval = seconds
        self._loop.wake()

    def policy_changed(self) -> None:
        """Re-read thresholds, intervals, probe and the signal setting from the policy.

        The manager calls this after `apply_policy`; the thread picks the new values up at
        once. An interval set with `set_interval` stays in force.
        """
        with self._work:
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
        (see `memguard.readings.Readings.thresholds`)."""
        return self.readings.thresholds(sample)

    # -- state --------------------------------------------------------------------------------

    @property
    def level(self) -> str:
        """The current level: ``"ok"``, ``"warning"``, ``"emergency"`` or ``"critical"``."""
        return self._lines.level

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

    # -- the thread ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the daemon thread ``memguard-monitor`` (idempotent); it ticks at once."""
        with self._work:
            self._loop.wanted = True
            if self.running and not self._loop.stop_event.is_set():
                return
            self._update_signal_handler()
            logger.debug("memguard: monitor starting: samples every %s, passes every %s",
                         format_duration(self.sample_interval), format_duration(self.interval))
            self._loop.start()

    def stop(self, timeout: Optional[float] = 5.0) -> bool:
        """Stop the thread and wait up to `timeout` seconds for it; True once it has ended.

        Prompt: the thread waits on an event that `stop` sets. A tick in progress finishes
        first. Called from the monitor thread itself (a callback), it only asks.
        """
        self._loop.wanted = False
        self._remove_signal_handler()
        return self._loop.stop(timeout)

    @property
    def restarts(self) -> int:
        """How many times the thread died and was started again."""
        return self._loop.restarts

    def _failed(self) -> None:
        self.failures += 1

    def _wait_seconds(self) -> float:
        try:
            return self.next_wait()
        except Exception:  # a policy without a resolvable limit: the plain interval
            return self.sample_interval

    # -- one sample ---------------------------------------------------------------------------

    def tick(self) -> TickResult:
        """One synchronous step; what the thread does on every sample.

        Sample and move between levels (each change logged once, "quota exceeded" once past
        the limit); the periodic pass over every store when ``check_interval`` has passed since
        the last (and then a measured reclaim once enough has been evicted); ``gc.collect()``
        when ``gc_interval`` has passed; the emergency controller's decision on this sample
        (or a SIGUSR1 request); at ``critical``, the recycle hook when enabled; the periodic
        summary line. A step that raises is logged with its traceback, counted in `failures`,
        and the other steps still run.
        """
        with self._work:
            return self._tick()

    def _tick(self) -> TickResult:
        clock = self.manager.clock
        memory = self.policy
        now = clock()
        self.ticks += 1
        errors: list[str] = []
        previous = self._lines.level
        if self._last_gc is None:
            self._last_gc = now

        sample = self._guard(errors, "probe", self.probe)
        if sample is not None:
            self._take(now, sample, memory)

        cleanup: Optional[CleanupReport] = None
        if self._last_pass is None or now - self._last_pass >= self.interval:
            self._last_pass = now
            cleanup = self._guard(errors, "periodic cleanup", self.manager.run_cleanup)
        collected, after = self._give_back(errors, sample)
        if after is not None and sample is not None:  # measured, like an emergency
            measured = {"usage_before": sample.usage, "usage_after": after.usage}
            if cleanup is None:  # evictions on insert made the reclaim due
                self._remember(CleanupReport("reclaim", started_at=now, **measured))
            else:
                cleanup = attrs.evolve(cleanup, **measured)
            sample = after
        if cleanup is not None and cleanup.evicted:
            self._remember(cleanup)

        if collected is None and now - self._last_gc >= memory.gc_interval:
            self._last_gc = now
            collected = self._guard(errors, "gc", gc.collect)

        emergency: Optional[CleanupReport] = None
        held_back = ""
        if self._signals.take():
            announce(logging.WARNING, "Memory cleanup requested by SIGUSR1")
            emergency = self._guard(errors, "emergency", self._emergency, "signal", sample)
        elif sample is not None:
            emergency, held_back = self._consult(errors, now, sample)

        recycled = False
        if self._lines.level == "critical" and memory.recycle and not self._recycle_requested:
            recycled = bool(self._guard(errors, "recycle", self._recycle))

        if sample is not None and (
            self._last_summary is None or now - self._last_summary >= memory.summary_interval
        ):
            self._last_summary = now
            self._guard(errors, "summary", self._log_summary, self.last_sample or sample)

        return TickResult(
            at=now, sample=sample, previous_level=previous, level=self._lines.level,
            cleanup=cleanup, gc_collected=collected, emergency=emergency, recycled=recycled,
            errors=tuple(errors), held_back=held_back,
        )

    def _take(self, now: float, sample: MemorySample, memory: MemoryPolicy,
              extras: bool = True) -> None:
        """Record `sample` and move to the level it calls for."""
        self.last_sample = sample
        self.readings.record(now, sample.usage)
        self._observe(sample, memory, extras)

    def _give_back(self, errors: list[str], sample: Optional[MemorySample]
                   ) -> tuple[Optional[int], Optional[MemorySample]]:
        """Once `TRIM_AFTER` bytes have been evicted since the last reclaim (by passes or by
        inserts over a bound), reclaim and sample again. Returns what the reclaim's gc
        collected and the sample after it (both None when nothing was due)."""
        evicted = self.manager.evicted_bytes
        if evicted - self._evicted_at_reclaim < TRIM_AFTER:
            return None, None
        self._evicted_at_reclaim = evicted
        given_back = self._guard(errors, "reclaim", self._reclaim)
        if given_back is None:
            return None, None
        now = self.manager.clock()
        self._last_gc = now  # reclaim() ran a full collection
        after = self._guard(errors, "probe", self.probe)
        if after is not None:
            self._take(now, after, self.policy, extras=False)
        return given_back.collected, after

    def _consult(self, errors: list[str], now: float,
                 sample: MemorySample) -> tuple[Optional[CleanupReport], str]:
        """Ask the controller about `sample`; run the cleanup it asks for."""
        thresholds = self.thresholds(sample)
        growth = self.readings.growth()
        decision = self.controller.decide(now, sample, thresholds, growth=growth,
                                          horizon=self.sample_interval)
        if not decision.act:
            return None, decision.reason
        expected = None
        if decision.trigger == "predicted" and growth is not None:
            expected = int(sample.usage + growth * self.sample_interval)
        report = self._guard(errors, "emergency", self._emergency, decision.trigger, sample,
                             expected)
        return report, ""


    def next_wait(self) -> float:
        """Seconds until the next sample: the sample interval, or less when usage is growing
        fast enough to cross ``emergency`` before then (half the time it would take)."""
        every = self.sample_interval
        sample = self.last_sample
        growth = self.readings.growth()
        if sample is None or growth is None or growth <= 0:
            return every
        emergency = self.thresholds(sample).emergency
        if emergency is None or sample.usage >= emergency:
            return every
        return max(_MIN_WAIT, min(every, (emergency - sample.usage) / growth / 2))

    def _guard(self, errors: list[str], step: str, call: Callable[..., Any], *args: Any) -> Any:
        """`call(*args)`, or None after logging and counting what it raised.

        Any exception, not only `Exception`: a user's rule or callback that raises
        `asyncio.CancelledError`, `SystemExit` or `KeyboardInterrupt` must not end the thread.
        """
        try:
            return call(*args)
        except BaseException as error:
            self.failures += 1
            errors.append(f"{step}: {type(error).__name__}: {error}")
            logger.exception("memguard: monitor step %r failed; carrying on", step)
            return None

    def _reclaim(self, *, full: bool = True) -> Reclaim:
        """Give memory back (`memguard.memory.reclaim`); looked up at call time for tests."""
        return reclaim() if full else reclaim(full=False)

    def _remember(self, report: CleanupReport) -> None:
        """Keep `report` among the recent ones and add it to the running totals."""
        with self._state:
            self.recent_cleanups.append(report)
            totals = self.totals
            totals["cleanups"][report.kind] = totals["cleanups"].get(report.kind, 0) + 1
            totals["freed_estimate_bytes"] += report.freed_estimate
            if report.reclaimed is not None and report.reclaimed > 0:
                totals["reclaimed_bytes"] += report.reclaimed

    # -- levels and lines -----------------------------------------------------------------------

    def _observe(self, sample: MemorySample, memory: MemoryPolicy, extras: bool = True) -> None:
        """Move to the level `sample` calls for and log what changed (and, opt-in, a sample)."""
        old = self._lines.observe(sample, self.thresholds(sample), heroku=memory.log_samples,
                                  extras=extras)
        new = self._lines.level
        if new != old:
            if new != "critical":
                self._recycle_requested = self._recycle_refused = False
            if rank(old) < rank("warning") <= rank(new):
                self._loop.wake()  # sample faster from now on

    def _log_summary(self, sample: MemorySample) -> None:
        self._lines.summary(sample, (
            (name, sum(len(store.index) for store in group),
             sum(store.index.total_bytes for store in group))
            for name, group in self.manager.stores.items()))

    def _recycle(self) -> bool:
        """Ask the server to replace this worker, unless that would lose active jobs."""
        hook = self.on_recycle
        if hook is None:
            self._recycle_requested = True
            logger.critical(
                "memguard: recycle = true but no server integration installed a recycle hook; "
                "nothing to ask (memguard never kills the process)"
            )
            return False
        active = sum(store.stats().active for store in self.manager.handles())
        if active:
            if not self._recycle_refused:
                self._recycle_refused = True
                logger.critical("memguard: memory critical, but not recycling this worker: "
                                "%d active job(s) would be lost; asking again once they finish",
                                active)
            return False
        self._recycle_requested = True
        logger.critical("memguard: memory critical: asking the server to recycle this worker")
        hook()
        return True

    # -- emergency ----------------------------------------------------------------------------

    def emergency(self, forced: bool = False) -> CleanupReport:
        """Clean up to ``emergency_target`` now: evict, reclaim, measure (see
        `memguard.controller`). Unless `forced`, refused while the controller backs off after
        a round that could not lower usage (the report's note says so; nothing is recorded).
        """
        with self._cleaning:
            now = self.manager.clock()
            left = self.controller.backoff_left(now)
            if not forced and left is not None:
                why = self.controller.held_back(now) or "backing off"
                return CleanupReport("emergency", started_at=now, trigger="requested",
                                     note=f"skipped: {why}")
            return self._emergency("forced" if forced else "requested", None)

    def _emergency(self, trigger: str, sample: Optional[MemorySample],
                   expected: Optional[int] = None) -> CleanupReport:
        with self._cleaning:
            return self._clean(trigger, sample, expected)

    def _clean(self, trigger: str, sample: Optional[MemorySample],
               expected: Optional[int]) -> CleanupReport:
        if sample is None:
            sample = self.probe()
        growth = self.readings.cleanup_began()
        report = self.controller.run(sample, self.thresholds(sample), self._sample_after,
                                     trigger=trigger, expected=expected, growth=growth,
                                     heap=self._fresh_heap)
        end = self.manager.clock()
        self._evicted_at_reclaim = self.manager.evicted_bytes  # it reclaimed
        self.readings.cleanup_ended(end)  # the drop would read as shrinkage in the fit
        self._remember(report)
        return report

    def _sample_after(self) -> MemorySample:
        """A sample taken inside a cleanup: recorded, and the level follows it."""
        sample = self.probe()
        self._take(self.manager.clock(), sample, self.policy, extras=False)
        return sample

    def _fresh_heap(self, sample: MemorySample) -> Optional[int]:
        """The heap now: read directly for the real probes (their figure is rate-limited),
        else the injected probe's own figure."""
        if isinstance(self.probe, (ProcessProbe, CgroupProbe)):
            return heap_bytes()
        return sample.heap

    # -- questions ------------------------------------------------------------------------------

    def stats(self) -> MemoryStats:
        """A fresh `MemoryStats` (samples now; does not change the level or log anything)."""
        sample = self.probe()
        now = self.manager.clock()
        thresholds = self.thresholds(sample)
        level = next_level(self._lines.level, sample.usage, thresholds)
        with self._state:
            cleanups = tuple(self.recent_cleanups)
            totals = {**self.totals, "cleanups": dict(self.totals["cleanups"])}
        recent = self.readings.since_cleanup()
        if not recent or recent[-1][0] < now:
            recent.append((now, sample.usage))
        growth = growth_rate(recent)
        limit = sample.limit if sample.limit is not None else thresholds.limit
        return MemoryStats(
            sample=sample,
            level=level,
            thresholds=thresholds,
            stores=tuple(store.stats() for store in self.manager.handles()),
            recent_cleanups=cleanups,
            growth_per_minute=growth,
            time_to_limit=time_to_limit(sample.usage, limit, growth),
            monitoring=self.running,
            totals=totals,
            controller={**self.controller.state(now),
                        "sample_interval_seconds": self.sample_interval,
                        "pass_interval_seconds": self.interval},
        )

    def is_high(self, threshold_mb: Optional[float] = None) -> bool:
        """Usage now above `threshold_mb` MiB when given, else at warning level or above."""
        sample = self.probe()
        if threshold_mb is not None:
            return sample.usage > threshold_mb * 2**20
        level = next_level(self._lines.level, sample.usage, self.thresholds(sample))
        return rank(level) >= rank("warning")

    # -- signals ------------------------------------------------------------------------------

    @property
    def _on_signal(self) -> Callable[[int, Optional[FrameType]], None]:
        """The SIGUSR1 handler memguard installs (see `memguard.signals`)."""
        return self._signals.on_signal

    def _wants_signal(self) -> bool:
        return self._loop.wanted and self.policy.signal_cleanup

    def _update_signal_handler(self) -> None:
        if self._signals.update():
            self._loop.wake()  # re-enter the wait in signal-polling slices

    def _remove_signal_handler(self) -> None:
        self._signals.remove()

    # -- fork -----------------------------------------------------------------------------------

    def _before_fork(self) -> None:
        # Let a tick in progress finish, so the child never inherits a store lock or the work
        # lock held by a thread that does not exist there. Bounded: fork goes ahead regardless.
        self._fork_held = self._work.acquire(timeout=_FORK_TIMEOUT)
        self._fork_cleaning = self._cleaning.acquire(timeout=_FORK_TIMEOUT)

    def _after_fork_in_parent(self) -> None:
        if self._fork_cleaning:
            self._fork_cleaning = False
            self._cleaning.release()
        if self._fork_held:
            self._fork_held = False
            self._work.release()

    def _after_fork_in_child(self) -> None:
        """Fresh locks and events; restart the thread if it was running in the parent."""
        self._fork_held = self._fork_cleaning = False
        self._work = threading.RLock()
        self._cleaning = threading.RLock()
        self._state = threading.Lock()
        self.readings.forget()
        self._loop.relaunch()
