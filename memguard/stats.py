"""`MemoryStats`: the snapshot of memory and stores that ``GET /memory`` serves and /health
judges, and the growth figures it carries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import attrs

from memguard.events import CleanupReport
from memguard.handles import StoreStats
from memguard.memory import MemorySample
from memguard.options import Thresholds

__all__ = ["MemoryStats", "growth_rate", "time_to_limit"]


@attrs.frozen(slots=True)
class MemoryStats:
    """A snapshot of memory and the stores.

    `sample` is a fresh reading; `level` the monitor's level for it (hysteresis included);
    `thresholds` the policy's thresholds in bytes for the detected limit (None when the policy
    cannot be resolved); `stores` counts and sizes per store, never job contents;
    `recent_cleanups` the latest emergency cleanups and periodic passes that evicted something,
    oldest first. `growth_per_minute` is the least-squares slope of usage over the recent
    samples (since the last emergency, which would otherwise read as shrinkage), in bytes per
    minute; `time_to_limit` the seconds until usage reaches the limit at that rate (None when
    usage is not growing or there is no limit; 0 when already there). `monitoring` tells
    whether the monitor thread is running; `totals` are running totals since start (the
    Prometheus counters); `controller` says what the emergency controller did last and why it
    acts or holds back (trigger, rounds, back-off left).
    """

    sample: MemorySample
    level: str
    thresholds: Optional[Thresholds]
    stores: tuple[StoreStats, ...]
    recent_cleanups: tuple[CleanupReport, ...]
    growth_per_minute: Optional[float]
    time_to_limit: Optional[float]
    monitoring: bool
    totals: Mapping[str, Any] = attrs.field(factory=dict)
    controller: Mapping[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict with the same keys as the attributes; sizes in bytes."""
        return {
            "sample": self.sample.to_dict(),
            "level": self.level,
            "thresholds": None if self.thresholds is None else attrs.asdict(self.thresholds),
            "stores": [_store_dict(store) for store in self.stores],
            "recent_cleanups": [report.to_dict() for report in self.recent_cleanups],
            "growth_per_minute": self.growth_per_minute,
            "time_to_limit": self.time_to_limit,
            "monitoring": self.monitoring,
            "totals": dict(self.totals),
            "controller": dict(self.controller),
        }


def _store_dict(store: StoreStats) -> dict[str, Any]:
    data = store.to_dict()
    data["evictions"] = dict(store.evictions)
    return data


def growth_rate(points: Sequence[tuple[float, int]]) -> Optional[float]:
    """Least-squares slope of usage over time in bytes per minute; None under two instants."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_u = sum(u for _, u in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var <= 0:
        return None
    cov = sum((t - mean_t) * (u - mean_u) for t, u in points)
    return cov / var * 60.0


def time_to_limit(usage: int, limit: Optional[int], growth: Optional[float]) -> Optional[float]:
    """Seconds until `usage` reaches `limit` at `growth` bytes per minute (0 when there)."""
    if limit is None:
        return None
    if usage >= limit:
        return 0.0
    if growth is None or growth <= 0:
        return None
    return (limit - usage) / growth * 60.0
