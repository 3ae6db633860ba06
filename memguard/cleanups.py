"""The monitor's cleanups: emergency cleanups run one at a time, and the record of them all.

`Cleanups` asks the emergency controller (`memguard.controller`) whether a sample calls for a
cleanup and runs the ones it calls for, SIGUSR1 asks for, or a caller asks for, one at a time
(its own lock, apart from the monitor's tick lock, so a manual cleanup never waits for a tick
busy in a slow periodic pass). Samples taken inside a cleanup are recorded like any other and
move the level; the growth fit skips the drop. `CleanupRecord` keeps the recent reports and
the running totals (the Prometheus counters) for `MemoryStats`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, Optional

from memguard.controller import Decision, EmergencyController
from memguard.events import CleanupReport
from memguard.forklock import ForkSafeLock
from memguard.memory import CgroupProbe, MemorySample, ProcessProbe, heap_bytes
from memguard.readings import Readings
from memguard.schedule import Schedule

__all__ = ["CleanupRecord", "Cleanups"]


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
