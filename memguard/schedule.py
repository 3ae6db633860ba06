"""When the monitor's work is due (DESIGN section 4): the pace of its samples, and the steps
that run only now and then (the periodic pass, the full collection, the reclaim after enough
evictions, the summary line).

`Schedule` keeps the time each of those steps last ran, in ``manager.clock`` time, so tests
drive it with a fake clock. The monitor asks it on every tick which steps are due (asking
marks a due step as done now) and, before every wait, how long to wait.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Optional, Union

from memguard._units import parse_duration
from memguard.levels import rank
from memguard.memory import MemorySample
from memguard.options import MemoryPolicy

__all__ = ["MIN_WAIT", "PRESSURE_SPEEDUP", "TRIM_AFTER", "Schedule"]

TRIM_AFTER: Final = 32 * 2**20
"""Once this much has been evicted (by estimate, by passes or by inserts over a bound) since the
last reclaim, the next tick runs `reclaim()` and measures it: without it, glibc keeps the freed
arenas and a guarded process creeps up between emergencies."""

PRESSURE_SPEEDUP: Final = 4
"""At or above ``warning`` memory is sampled this many times as often."""

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
