"""One sample's steps, and when each periodic step (pass, gc, line) is due."""

from __future__ import annotations

import collections
import gc
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Optional, Union

import attrs

from memguard._logging import announce, logger
from memguard.eviction.events import CleanupReport
from memguard.memory.allocators import heap_bytes
from memguard.memory.probes import CgroupProbe, ProcessProbe
from memguard.memory.reclaim import Reclaim
from memguard.memory.samples import MemorySample
from memguard.monitor.controller import Decision, EmergencyController
from memguard.monitor.daemon import ForkSafeLock, Recycler
from memguard.monitor.kernel import KernelWake
from memguard.monitor.levels import LevelLines, rank
from memguard.monitor.readings import Readings
from memguard.monitor.triggers import SignalTrigger
from memguard.policy.options import MemoryPolicy
from memguard.policy.units import parse_duration

if TYPE_CHECKING:
    from memguard.monitor.host import MonitorHost

TRIM_AFTER: Final = 32 * 2**20
"""Once this much has been evicted (by estimate, by passes or by inserts over a bound) since the
last reclaim, the next tick runs `reclaim()` and measures it: without it, glibc keeps the freed
arenas and a guarded process creeps up between emergencies."""

PRESSURE_SPEEDUP: Final = 4
"""At or above ``warning`` memory is sampled this many times as often."""

WAKE_JOBS: Final = 256
"""Jobs the stores may take in between two samples before they wake the monitor early."""

MIN_WAKE_BYTES: Final = 4 * 2**20
"""The fewest weighed bytes a store takes in before it wakes the monitor early."""

MIN_WAIT: Final = 0.05
"""The shortest wait between two samples (seconds), however fast usage grows."""


class Schedule:
    """The monitor's clocks: sampling pace and the due times of its periodic steps.

    `policy()` is the memory policy now (read afresh, so a reloaded policy counts at once),
    `evicted()` the bytes the manager has evicted since start (by estimate).
    """

    def __init__(self, policy: Callable[[], MemoryPolicy], evicted: Callable[[], int]) -> None:
        self._policy = policy
        self._evicted = evicted
        self.pass_override: Optional[float] = None
        """The pass interval `set_pass_interval` chose (None: the policy's check_interval)."""
        # When each step last ran (clock time); None = not yet.
        self.last_pass: Optional[float] = None
        self.last_gc: Optional[float] = None
        self.last_summary: Optional[float] = None
        self.evicted_at_reclaim = 0
        """`evicted()` at the last reclaim."""

    # -- pace ---------------------------------------------------------------------------------

    @property
    def pass_interval(self) -> float:
        """Seconds between periodic passes: `set_pass_interval`'s value, else check_interval."""
        override = self.pass_override
        return override if override is not None else self._policy().check_interval

    def set_pass_interval(self, value: Union[float, str, None]) -> None:
        """Pass every `value` (seconds or a duration such as ``"30s"``); None = the policy's
        check_interval. Raises ValueError for anything not above zero."""
        if value is None:
            self.pass_override = None
            return
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError(f"the monitor interval must be above zero; got {value!r}")
        self.pass_override = seconds

    def sample_interval(self, level: str) -> float:
        """Seconds between samples at `level`: sample_interval, a quarter of it at warning and
        above, and never longer than the pass interval."""
        every = self._policy().sample_interval
        if rank(level) >= rank("warning"):
            every /= PRESSURE_SPEEDUP
        return min(every, self.pass_interval)

    def next_wait(self, level: str, sample: Optional[MemorySample], growth: Optional[float],
                  emergency: Callable[[MemorySample], Optional[int]]) -> float:
        """Seconds until the next sample: the sample interval, or less when usage (`sample`,
        growing by `growth` bytes per second) would cross ``emergency(sample)`` before then
        (half the time it would take, at least `MIN_WAIT`)."""
        every = self.sample_interval(level)
        if sample is None or growth is None or growth <= 0:
            return every
        bound = emergency(sample)
        if bound is None or sample.usage >= bound:
            return every
        return max(MIN_WAIT, min(every, (bound - sample.usage) / growth / 2))

    # -- periodic steps (asking marks a due step as run at `now`) -------------------------------

    def pass_due(self, now: float) -> bool:
        """The periodic pass: due on the first tick, then every pass interval."""
        if self.last_pass is not None and now - self.last_pass < self.pass_interval:
            return False
        self.last_pass = now
        return True

    def gc_due(self, now: float) -> bool:
        """A full ``gc.collect()``: every gc_interval, counted from the first tick."""
        if self.last_gc is None:
            self.last_gc = now
        if now - self.last_gc < self._policy().gc_interval:
            return False
        self.last_gc = now
        return True

    def summary_due(self, now: float) -> bool:
        """The summary line: on the first sample, then every summary_interval."""
        last = self.last_summary
        if last is not None and now - last < self._policy().summary_interval:
            return False
        self.last_summary = now
        return True

    def reclaim_due(self) -> bool:
        """A reclaim: once `TRIM_AFTER` bytes have been evicted since the last one."""
        evicted = self._evicted()
        if evicted - self.evicted_at_reclaim < TRIM_AFTER:
            return False
        self.evicted_at_reclaim = evicted
        return True

    def reclaimed(self) -> None:
        """A reclaim ran (an emergency cleanup's): count evictions from here."""
        self.evicted_at_reclaim = self._evicted()

    def collected(self, now: float) -> None:
        """A full collection ran at `now` (a reclaim's): it stands for the periodic one."""
        self.last_gc = now


class CleanupRecord:
    """Recent cleanup reports (the last `keep`, oldest first) and running totals since start:
    cleanups by kind, bytes evicted (estimate) and bytes given back (measured, when positive).
    Safe to read from any thread while the monitor writes."""

    def __init__(self, keep: int) -> None:
        self.recent: collections.deque[CleanupReport] = collections.deque(maxlen=keep)
        self.totals: dict[str, Any] = {"cleanups": {}, "freed_estimate_bytes": 0,
                                       "reclaimed_bytes": 0}
        self.guard = ForkSafeLock()

    def remember(self, report: CleanupReport) -> None:
        """Keep `report` among the recent ones and add it to the totals."""
        with self.guard.lock:
            self.recent.append(report)
            totals = self.totals
            totals["cleanups"][report.kind] = totals["cleanups"].get(report.kind, 0) + 1
            totals["freed_estimate_bytes"] += report.freed_estimate
            if report.reclaimed is not None and report.reclaimed > 0:
                totals["reclaimed_bytes"] += report.reclaimed

    def snapshot(self) -> tuple[tuple[CleanupReport, ...], dict[str, Any]]:
        """The recent reports and a copy of the totals, taken together."""
        with self.guard.lock:
            return tuple(self.recent), {**self.totals, "cleanups": dict(self.totals["cleanups"])}


class Cleanups:
    """Decides on and runs one monitor's emergency cleanups (module docstring).

    `take(now, sample)` records a sample taken inside a cleanup and moves the level;
    `clock()` is the manager's clock.
    """

    def __init__(self, controller: EmergencyController, readings: Readings,
                 record: CleanupRecord, schedule: Schedule, *, clock: Callable[[], float],
                 take: Callable[[float, MemorySample], None]) -> None:
        self.controller = controller
        self.readings = readings
        self.record = record
        self.schedule = schedule
        self.clock = clock
        self.take = take
        self.guard = ForkSafeLock()  # one cleanup at a time

    def decide(self, now: float, sample: MemorySample,
               horizon: float) -> tuple[Decision, Optional[int]]:
        """The controller's decision on `sample` (`horizon`: seconds to the next sample), and
        the usage the predictive trigger expects by then (None for other triggers)."""
        growth = self.readings.growth()
        decision = self.controller.decide(now, sample, self.readings.thresholds(sample),
                                          growth=growth, horizon=horizon)
        expected = None
        if decision.act and decision.trigger == "predicted" and growth is not None:
            expected = int(sample.usage + growth * horizon)
        return decision, expected

    def emergency(self, forced: bool = False) -> CleanupReport:
        """Clean up to ``emergency_target`` now, as a caller asked; unless `forced`, refused
        (a report whose note says why, not recorded) while the controller backs off."""
        with self.guard.lock:
            now = self.clock()
            if not forced and self.controller.backoff_left(now) is not None:
                why = self.controller.held_back(now) or "backing off"
                return CleanupReport("emergency", started_at=now, trigger="requested",
                                     note=f"skipped: {why}")
            return self.run("forced" if forced else "requested", None)

    def run(self, trigger: str, sample: Optional[MemorySample],
            expected: Optional[int] = None) -> CleanupReport:
        """One emergency cleanup from `sample` (None: sample now), recorded."""
        with self.guard.lock:
            if sample is None:
                sample = self.readings.probe()
            growth = self.readings.cleanup_began()
            report = self.controller.run(sample, self.readings.thresholds(sample),
                                         self._sample_after, trigger=trigger,
                                         expected=expected, growth=growth,
                                         heap=self._fresh_heap)
            end = self.clock()
            self.schedule.reclaimed()  # the controller reclaimed
            self.readings.cleanup_ended(end)  # the drop would read as shrinkage in the fit
            self.record.remember(report)
            return report

    def _sample_after(self) -> MemorySample:
        """A sample taken inside a cleanup: recorded, and the level follows it."""
        sample = self.readings.probe()
        self.take(self.clock(), sample)
        return sample

    def _fresh_heap(self, sample: MemorySample) -> Optional[int]:
        """The heap now: read directly for the real probes (their figure is rate-limited),
        else the injected probe's own figure."""
        if isinstance(self.readings.probe, (ProcessProbe, CgroupProbe)):
            return heap_bytes()
        return sample.heap


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


class Ticker:
    """The steps of one monitor's ticks over its parts, and the counts and level they keep.

    Not locked: the monitor serializes ticks. `reclaim()` gives memory back, `horizon()` is
    the seconds to the next sample, `wake()` cuts the thread's wait short (to sample faster).
    """

    def __init__(self, manager: MonitorHost, readings: Readings, schedule: Schedule,
                 record: CleanupRecord, cleanups: Cleanups, recycler: Recycler,
                 signals: SignalTrigger, *, reclaim: Callable[[], Reclaim],
                 horizon: Callable[[], float], wake: Callable[[], None]) -> None:
        self.manager = manager
        self.readings = readings
        self.schedule = schedule
        self.record = record
        self.cleanups = cleanups
        self.recycler = recycler
        self.signals = signals
        self.reclaim = reclaim
        self.horizon = horizon
        self.wake = wake
        self.lines = LevelLines()
        self.ticks = 0
        self.failures = 0
        """How many steps (probe, pipeline, gc, emergency, hooks) raised so far."""
        self.last_sample: Optional[MemorySample] = None
        self.kernel: Optional[KernelWake] = None
        """Kernel notifications that wake the monitor (set while its thread runs)."""

    @property
    def policy(self) -> MemoryPolicy:
        return self.manager.policy.memory

    def tick(self) -> TickResult:
        """One step (module docstring)."""
        now = self.manager.clock()
        self.ticks += 1
        errors: list[str] = []
        previous = self.lines.level
        sample = self.guard(errors, "probe", self.readings.probe)
        if sample is not None:
            self.take(now, sample)
        cleanup, collected, sample = self._periodic(errors, now, sample)
        # Jobs completed in place since the last sample: dated finished now, so a read
        # from here on is their delivery and the emergency order knows them.
        self.guard(errors, "recheck", self.manager.notice_finished)
        emergency, held_back = self._emergency(errors, now, sample)
        recycled = False
        if self.recycler.due(self.lines.level, self.policy.recycle):
            recycled = bool(self.guard(errors, "recycle", self.recycler.recycle))
        if sample is not None and self.schedule.summary_due(now):
            self.guard(errors, "summary", self._summary, self.last_sample or sample)
        self.guard(errors, "intake", self.arm_intake)
        return TickResult(
            at=now, sample=sample, previous_level=previous, level=self.lines.level,
            cleanup=cleanup, gc_collected=collected, emergency=emergency, recycled=recycled,
            errors=tuple(errors), held_back=held_back,
        )

    def guard(self, errors: list[str], step: str, call: Callable[..., Any], *args: Any) -> Any:
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

    # -- the steps ------------------------------------------------------------------------------

    def take(self, now: float, sample: MemorySample, extras: bool = True) -> None:
        """Record `sample` and move to the level it calls for; log what changed (and, unless
        `extras` is off, as inside a cleanup or right after a reclaim, the opt-in lines)."""
        self.last_sample = sample
        self.readings.record(now, sample.usage)
        old = self.lines.observe(sample, self.readings.thresholds(sample),
                                 heroku=self.policy.log_samples, extras=extras)
        new = self.lines.level
        if new != old:
            self.recycler.level_changed(new)
            if rank(old) < rank("warning") <= rank(new):
                self.wake()  # sample faster from now on

    def arm_intake(self) -> None:
        """Be woken before the next sample once the stores take in `WAKE_JOBS` jobs or a
        store grows by `wake_bytes` (a burst between two samples: DESIGN section 4)."""
        handles = self.manager.handles()
        largest = max((h.index.total_bytes for h in handles), default=0)
        self.manager.intake.arm(self.wake, jobs=self.manager.intake.jobs, store_bytes=largest,
                                margin_jobs=WAKE_JOBS, margin_bytes=self.wake_bytes())
        kernel = self.kernel  # read once: `Monitor.stop` may take it away meanwhile
        if kernel is not None:  # cgroup v1 thresholds or a v2 PSI trigger, where offered
            kernel.ensure(self.readings.probe, self.readings.thresholds(self.last_sample))

    def wake_bytes(self) -> int:
        """The bytes a store may take in before it wakes the monitor: 1/64 of the limit (of
        ``emergency`` without one), at least `MIN_WAKE_BYTES`."""
        sample = self.last_sample
        thresholds = self.readings.thresholds(sample)
        scale = thresholds.limit or (sample.limit if sample is not None else None) \
            or thresholds.emergency or 0
        return max(MIN_WAKE_BYTES, scale // 64)

    def _periodic(self, errors: list[str], now: float, sample: Optional[MemorySample]
                  ) -> tuple[Optional[CleanupReport], Optional[int], Optional[MemorySample]]:
        """The pass, the reclaim and the full collection, each when due. Returns the pass's
        report (measured when a reclaim followed it), what gc collected, and the sample to go
        on with (the one after the reclaim, when one ran)."""
        cleanup: Optional[CleanupReport] = None
        if self.schedule.pass_due(now):
            cleanup = self.guard(errors, "periodic cleanup", self.manager.run_cleanup)
        collected, after = self._give_back(errors)
        if after is not None and sample is not None:  # measured, like an emergency
            before, after_usage = sample.usage, after.usage
            if cleanup is None:  # evictions on insert made the reclaim due
                self.record.remember(CleanupReport("reclaim", started_at=now,
                                                   usage_before=before, usage_after=after_usage))
            else:
                cleanup = attrs.evolve(cleanup, usage_before=before, usage_after=after_usage)
            sample = after
        if cleanup is not None and cleanup.evicted:
            self.record.remember(cleanup)
        if collected is None and self.schedule.gc_due(now):
            collected = self.guard(errors, "gc", gc.collect)
        return cleanup, collected, sample

    def _give_back(self, errors: list[str]) -> tuple[Optional[int], Optional[MemorySample]]:
        """Once `memguard.monitor.tick.TRIM_AFTER` bytes have been evicted since the last reclaim
        (by passes or by inserts over a bound), reclaim and sample again. Returns what the
        reclaim's gc collected and the sample after it (both None when nothing was due)."""
        if not self.schedule.reclaim_due():
            return None, None
        given_back = self.guard(errors, "reclaim", self.reclaim)
        if given_back is None:
            return None, None
        now = self.manager.clock()
        self.schedule.collected(now)
        after = self.guard(errors, "probe", self.readings.probe)
        if after is not None:
            self.take(now, after, extras=False)
        return given_back.collected, after

    def _emergency(self, errors: list[str], now: float, sample: Optional[MemorySample]
                   ) -> tuple[Optional[CleanupReport], str]:
        """A SIGUSR1 request, else the controller's decision on `sample`: the cleanup that
        ran (if any), and why the controller held back (if it did)."""
        if self.signals.pending and self.signals.take():  # the flag first: no call a tick
            announce(logging.WARNING, "Memory cleanup requested by SIGUSR1")
            return self.guard(errors, "emergency", self.cleanups.run, "signal", sample), ""
        if sample is None:
            return None, ""
        decision, expected = self.cleanups.decide(now, sample, self.horizon())
        if not decision.act:
            return None, decision.reason
        return self.guard(errors, "emergency", self.cleanups.run, decision.trigger, sample,
                          expected), ""

    def _summary(self, sample: MemorySample) -> None:
        self.lines.summary(sample, (
            (name, sum(len(store.index) for store in group),
             sum(store.index.total_bytes for store in group))
            for name, group in self.manager.stores.items()))
