"""`PressureGauge`: whether memory is at or above `warning`, as a soft-bounded store asks.

Soft bounds (`bounds = "soft"`) are enforced only under pressure. The monitor's level answers
that; a write into a soft-bounded store asks with ``fresh=True``, and when the last sample was
close to `warning` memory is read again (rate-limited), so the write that crosses `warning`
cuts its store back at once instead of at the monitor's next sample.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol

from memguard.memory.samples import MemorySample, Probe
from memguard.monitor.levels import rank
from memguard.policy.thresholds import Thresholds

#: A write into a soft-bounded store reads memory afresh when the monitor's last sample is
#: within this share of `warning`.
NEAR_WARNING = 0.03
#: ... at most this often (seconds of the manager's clock).
FRESH_EVERY = 0.05


class Watching(Protocol):
    """What the gauge reads of the monitor (`memguard.monitor.thread.Monitor`)."""

    @property
    def level(self) -> str: ...

    @property
    def last_sample(self) -> Optional[MemorySample]: ...

    @property
    def probe(self) -> Probe: ...

    def thresholds(self, sample: Optional[MemorySample] = None) -> Thresholds: ...


class PressureGauge:
    """Answers `under_pressure` for one manager; remembers its last fresh reading."""

    __slots__ = ("clock", "fresh_at", "fresh_pressed")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        #: When memory was last read afresh for a write, and what it said.
        self.fresh_at: Optional[float] = None
        self.fresh_pressed = False

    def under_pressure(self, monitor: Optional[Watching], *, fresh: bool = False) -> bool:
        """The monitor's level at or above `warning` (False without a monitor, or before its
        first sample); with `fresh`, a last sample within `NEAR_WARNING` of `warning` is read
        again (at most every `FRESH_EVERY` seconds)."""
        if monitor is None:
            return False
        if rank(monitor.level) >= rank("warning"):
            return True
        last = monitor.last_sample
        if not fresh or last is None:
            return False
        warning = monitor.thresholds(last).warning
        if warning is None or last.usage < warning * (1 - NEAR_WARNING):
            return False
        now = self.clock()
        if self.fresh_at is not None and now - self.fresh_at < FRESH_EVERY:
            return self.fresh_pressed
        self.fresh_at = now
        self.fresh_pressed = monitor.probe().usage >= warning
        return self.fresh_pressed
