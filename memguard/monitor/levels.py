"""Levels (ok < warning < emergency < critical) and the lines logged for them."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Final, Optional, Protocol

from memguard._logging import announce, logger
from memguard.memory.samples import MemorySample
from memguard.policy.thresholds import Thresholds
from memguard.policy.units import format_size

LEVELS: Final = ("ok", "warning", "emergency", "critical")
"""The memory levels, lowest first."""

LEVEL_STATUS: Final[Mapping[str, str]] = {
    "ok": "pass",
    "warning": "warn",
    "emergency": "warn",
    "critical": "fail",
}
"""Health status per level (IETF health-check draft). Emergency is ``warn``, not ``fail``: the
monitor is already cleaning up, and failing readiness then would only move traffic away from a
worker that is recovering."""

SAMPLE_LINE_INTERVAL: Final = 20.0
"""Seconds between two ``log_samples`` lines: Heroku's log-runtime-metrics period."""

HYSTERESIS: Final = 0.05
"""A level is left only when usage falls this share of its threshold below it (5%); the
emergency controller also uses it as the margin of growth that re-arms a back-off."""

_RANK: Final = {name: position for position, name in enumerate(LEVELS)}


class LevelThresholds(Protocol):
    """What the level functions read: a threshold in bytes per level (None = not set)."""

    @property
    def warning(self) -> Optional[int]: ...
    @property
    def emergency(self) -> Optional[int]: ...
    @property
    def critical(self) -> Optional[int]: ...


def rank(level: str) -> int:
    """The position of `level` in `LEVELS` (ok = 0)."""
    return _RANK[level]


def threshold_of(thresholds: LevelThresholds, level: str) -> Optional[int]:
    """The bytes at which `level` starts (0 for ok, None when the threshold is not set)."""
    if level == "ok":
        return 0
    value: Optional[int] = getattr(thresholds, level)
    return value


def raw_level(usage: int, thresholds: LevelThresholds) -> str:
    """The highest level whose threshold `usage` has reached (no hysteresis)."""
    found = "ok"
    for level in LEVELS[1:]:
        threshold = threshold_of(thresholds, level)
        if threshold is not None and usage >= threshold:
            found = level
    return found


def next_level(current: str, usage: int, thresholds: LevelThresholds) -> str:
    """The level after `current` for `usage`: up at once, down only past the margin.

    Rising is immediate (usage at or above a threshold). Falling drops one level at a time
    while usage is below the current level's threshold minus `HYSTERESIS` of it, so usage
    hovering around a threshold does not flap (and log) on every sample.
    """
    reached = raw_level(usage, thresholds)
    if rank(reached) >= rank(current):
        return reached
    level = current
    while rank(level) > rank(reached):
        threshold = threshold_of(thresholds, level)
        if threshold is not None and usage >= threshold * (1 - HYSTERESIS):
            break
        level = LEVELS[rank(level) - 1]
    return level


class LevelLines:
    """The current level and the once-per-crossing lines about it."""

    def __init__(self) -> None:
        self.level = "ok"
        self._over_quota = False
        self._heap_high = False
        self._next_sample_line = 0.0  # time.monotonic() of the next log_samples line

    def observe(self, sample: MemorySample, thresholds: Thresholds, *, heroku: bool = False,
                extras: bool = True) -> str:
        """Move to the level `sample` calls for and log what changed; returns the old level.

        `extras` adds the heap warning and (with `heroku`) the opt-in sample line; samples
        taken inside a cleanup skip them.
        """
        old = self.level
        new = next_level(old, sample.usage, thresholds)
        if new != old:
            self.level = new
            _log_level_change(old, new, sample, thresholds)
        self._check_quota(sample, thresholds)
        if extras:
            self._check_heap(sample, thresholds)
            now = time.monotonic()
            if heroku and now >= self._next_sample_line:  # visible like the other lines
                self._next_sample_line = now + SAMPLE_LINE_INTERVAL
                announce(logging.INFO, "%s", heroku_line(sample, self.level))
        return old

    def _check_quota(self, sample: MemorySample, thresholds: Thresholds) -> None:
        """Say "quota exceeded" once each time usage passes the limit (Heroku's R14 words)."""
        limit = thresholds.limit if thresholds.limit is not None else sample.limit
        if limit is None:
            return
        if not self._over_quota and sample.usage > limit:
            self._over_quota = True
            announce(logging.ERROR, "Memory quota exceeded: usage %s > limit %s (%.0f%%)",
                     format_size(sample.usage), format_size(limit), sample.usage / limit * 100)
        elif self._over_quota and sample.usage < limit * (1 - HYSTERESIS):
            self._over_quota = False
            announce(logging.INFO, "Memory back under quota: usage %s, limit %s",
                     format_size(sample.usage), format_size(limit))

    def _check_heap(self, sample: MemorySample, thresholds: Thresholds) -> None:
        bound = thresholds.warning_heap
        if bound is None or sample.heap is None:
            return
        if not self._heap_high and sample.heap >= bound:
            self._heap_high = True
            announce(logging.WARNING, "Memory heap warning: heap %s >= warning_heap %s (rss %s)",
                     format_size(sample.heap), format_size(bound), format_size(sample.rss))
        elif self._heap_high and sample.heap < bound * (1 - HYSTERESIS):
            self._heap_high = False
            announce(logging.INFO, "Memory heap back below warning_heap: heap %s < %s",
                     format_size(sample.heap), format_size(bound))

    def summary(self, sample: MemorySample, stores: Iterable[tuple[str, int, int]]) -> None:
        """The periodic line: usage, level, and each store's jobs and bytes."""
        parts = [f"{name}={jobs} ({format_size(size)})" for name, jobs, size in stores]
        share = "" if sample.utilization is None else f" ({sample.utilization:.0%} of limit)"
        logger.info("memguard: usage %s%s, rss %s, level %s; jobs %s",
                    format_size(sample.usage), share, format_size(sample.rss), self.level,
                    " ".join(parts) or "none")


def _log_level_change(old: str, new: str, sample: MemorySample, thresholds: Thresholds) -> None:
    usage = format_size(sample.usage)
    limit = "" if thresholds.limit is None else f", limit {format_size(thresholds.limit)}"
    if rank(new) > rank(old):
        bound = threshold_of(thresholds, new) or 0
        text = f"usage {usage} >= {new} {format_size(bound)}{limit}"
    else:
        bound = threshold_of(thresholds, old) or 0
        text = f"usage {usage} fell below {old} {format_size(bound)} - 5%{limit}"
    if new == "critical":
        severity = logging.CRITICAL
    elif new == "ok":
        severity = logging.INFO
    else:
        severity = logging.WARNING
    announce(severity, "Memory level %s -> %s: %s", old, new, text)


def heroku_line(sample: MemorySample, level: str) -> str:
    """A Heroku-style metrics line with numeric values and the worker as ``source``:
    ``source=web.1.pid1234 sample#memguard.rss=431.70MB sample#memguard.utilization=0.84
    sample#memguard.level=0`` (the level as its rank: ok 0, warning 1, emergency 2,
    critical 3). The source is the dyno (``DYNO``) or the host name, plus the pid."""
    # os.uname().nodename is socket.gethostname() on POSIX, without importing socket
    origin = os.environ.get("DYNO") or os.uname().nodename or "memguard"
    parts = [f"source={origin}.pid{os.getpid()}",
             f"sample#memguard.usage={_mb(sample.usage)}",
             f"sample#memguard.rss={_mb(sample.rss)}"]
    if sample.swap:
        parts.append(f"sample#memguard.swap={_mb(sample.swap)}")
    if sample.heap is not None:
        parts.append(f"sample#memguard.heap={_mb(sample.heap)}")
    if sample.utilization is not None:
        parts.append(f"sample#memguard.utilization={sample.utilization:.3f}")
    parts.append(f"sample#memguard.level={rank(level)}")
    return " ".join(parts)


def _mb(size: int) -> str:
    """Mebibytes with Heroku's unit suffix and two decimals, as its own lines
    (``sample#memory_rss=431.70MB``)."""
    return f"{size / 2**20:.2f}MB"
