"""One step of the monitor (`Monitor.tick`): what happens on every sample, in order.

Sample and move between levels (`memguard.lines`); the periodic pass, the reclaim after enough
evictions and the full collection, each when `memguard.schedule` says it is due; a SIGUSR1
request or else the emergency controller's decision on the sample (`memguard.cleanups`); the
recycle request at ``critical`` (`memguard.recycling`); the periodic summary line. Each step
runs guarded: what it raises is logged with its traceback and counted, and the next step
still runs, so one broken rule, callback or probe never stops the others.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

import attrs

from memguard._logging import announce, logger
from memguard.cleanups import CleanupRecord, Cleanups
from memguard.events import CleanupReport
from memguard.levels import rank
from memguard.lines import LevelLines
from memguard.memory import MemorySample, Reclaim
from memguard.options import MemoryPolicy
from memguard.readings import Readings
from memguard.recycling import Recycler
from memguard.schedule import Schedule
from memguard.signals import SignalTrigger

if TYPE_CHECKING:
    from memguard._manager import MemoryManager

__all__ = ["TickResult", "Ticker"]


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

    def __init__(self, manager: MemoryManager, readings: Readings, schedule: Schedule,
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
        emergency, held_back = self._emergency(errors, now, sample)
        recycled = False
        if self.recycler.due(self.lines.level, self.policy.recycle):
            recycled = bool(self.guard(errors, "recycle", self.recycler.recycle))
        if sample is not None and self.schedule.summary_due(now):
            self.guard(errors, "summary", self._summary, self.last_sample or sample)
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
        """Once `memguard.schedule.TRIM_AFTER` bytes have been evicted since the last reclaim
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
        if self.signals.take():
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
