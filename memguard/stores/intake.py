"""`Intake`: what the stores took in since the monitor's last sample, to wake it early.

A burst can fill memory between two samples (DESIGN section 4, "Bursts"). Each insert into a
managed store adds one to `Intake.jobs` and compares it, and its store's weighed bytes, with
the marks the monitor set at its last sample; past either, `trip` wakes the monitor (once per
sample: the marks then stay out of reach until the monitor sets them again). The insert cost
is that add and two compares; the counts are unlocked (a lost increment under a race only
delays a wake by one job).
"""

from __future__ import annotations

import sys
from typing import Callable, Final, Optional

NEVER: Final = sys.maxsize
"""A mark no count reaches: no wake armed."""


class Intake:
    """Jobs taken in by every store of one manager, and the marks that wake its monitor.

    `jobs` counts inserts since start; `jobs_mark` is the count that wakes the monitor;
    `bytes_mark` the weighed bytes (of any one store) that do; `wakes` counts the wakes.
    """

    __slots__ = ("_wake", "bytes_mark", "jobs", "jobs_mark", "wakes")

    def __init__(self) -> None:
        self.jobs = 0
        self.jobs_mark = NEVER
        self.bytes_mark = NEVER
        self.wakes = 0
        self._wake: Optional[Callable[[], None]] = None

    def arm(self, wake: Callable[[], None], *, jobs: int, store_bytes: int,
            margin_jobs: int, margin_bytes: int) -> None:
        """Wake through `wake` once `margin_jobs` more jobs are stored, or once a store
        holds `margin_bytes` more than `store_bytes` (the largest store's weighed bytes now)."""
        self._wake = wake
        self.jobs_mark = jobs + margin_jobs
        self.bytes_mark = store_bytes + margin_bytes

    def disarm(self) -> None:
        """No wakes (the monitor stopped)."""
        self._wake = None
        self.jobs_mark = self.bytes_mark = NEVER

    def count(self, store_bytes: int) -> None:
        """One job stored into a store that now holds `store_bytes` (by estimate): wake the
        monitor if that passes a mark. Managed `__setitem__` does the same inline."""
        self.jobs += 1
        if self.jobs >= self.jobs_mark or store_bytes >= self.bytes_mark:
            self.trip()

    def trip(self) -> None:
        """A mark was passed: wake the monitor, once until it arms again."""
        self.jobs_mark = self.bytes_mark = NEVER
        wake = self._wake
        if wake is not None:
            self.wakes += 1
            wake()
