"""The monitor's level, and the lines it writes as memory moves (DESIGN section 4).

`LevelLines` holds the level (with hysteresis) and the few flags that make each line appear
once per crossing: level changes, "quota exceeded" past the limit, the heap warning, the
opt-in Heroku-style sample line and the periodic summary. The lines people grep for start
with ``Memory`` and go through `memguard._logging.announce`, so they reach stderr even when
the app set up no logging.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable

from memguard._logging import announce, logger
from memguard._units import format_size
from memguard.levels import HYSTERESIS, next_level, rank, threshold_of
from memguard.memory import MemorySample
from memguard.options import Thresholds

__all__ = ["LevelLines", "heroku_line"]


class LevelLines:
    """The current level and the once-per-crossing lines about it."""

    def __init__(self) -> None:
        self.level = "ok"
        self._over_quota = False
        self._heap_high = False

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
            if heroku:
                logger.info("%s", heroku_line(sample, self.level))
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
            logger.warning("memguard: heap %s >= warning_heap %s (rss %s)",
                           format_size(sample.heap), format_size(bound),
                           format_size(sample.rss))
        elif self._heap_high and sample.heap < bound * (1 - HYSTERESIS):
            self._heap_high = False
            logger.info("memguard: heap %s back below warning_heap %s",
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
    ``source=web.1.pid1234 sample#memguard.rss=431.7MB sample#memguard.utilization=0.84
    sample#memguard.level=0`` (the level as its rank: ok 0, warning 1, emergency 2,
    critical 3). The source is the dyno (``DYNO``) or the host name, plus the pid."""
    origin = os.environ.get("DYNO") or socket.gethostname() or "memguard"
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
    """Mebibytes with Heroku's unit suffix (numeric for its log parser)."""
    return f"{size / 2**20:.1f}MB"
