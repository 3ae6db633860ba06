"""Readings: samples kept, growth measured over recent samples, and `MemoryStats`."""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Optional

import attrs

from memguard._logging import logger
from memguard.eviction.events import CleanupReport
from memguard.memory.probes import detect_limit, make_probe
from memguard.memory.samples import MemorySample, Probe
from memguard.policy.options import MemoryPolicy
from memguard.policy.thresholds import Thresholds
from memguard.stores.protocol import StoreStats


class Readings:
    """The probe, the thresholds and the sample history of one monitor."""

    def __init__(self, policy: Callable[[], MemoryPolicy],
                 injected: Callable[[], Optional[Probe]], *, history: int = 360) -> None:
        self._policy = policy
        self._injected = injected
        self.history: collections.deque[tuple[float, int]] = collections.deque(maxlen=history)
        """(time, usage) of recent samples, oldest first."""
        self.lock = threading.Lock()  # guards the history against the thread
        self.fit_from: Optional[float] = None
        self.peak: Optional[int] = None
        """The highest usage any recorded sample read, those taken inside a cleanup included
        (None before the first)."""
        self._own_probe: Optional[Probe] = None
        self._auto_limit: Optional[int] = -1  # -1: not read yet
        self._thresholds: Optional[Thresholds] = None
        self._thresholds_limit: Optional[int] = -1

    # -- probe and thresholds ------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the probe and thresholds built from the old policy (a policy change)."""
        if self._own_probe is not None:
            _close(self._own_probe)
        self._own_probe = None
        self._auto_limit = -1
        self._thresholds = None
        self._thresholds_limit = -1

    @property
    def probe(self) -> Probe:
        """The manager's probe when it has one, else one built from the policy's scope/limit."""
        injected = self._injected()
        if injected is not None:
            return injected
        if self._own_probe is None:
            memory = self._policy()
            if isinstance(memory.limit, int):
                limit: Optional[int] = memory.limit
            elif memory.limit == "auto":
                limit = self.detected_limit()
            else:
                limit = None
            self._own_probe = make_probe(memory.scope, limit=limit)
        return self._own_probe

    def detected_limit(self) -> Optional[int]:
        """The cgroup's limit, else None: no limit known (read once per policy)."""
        if self._auto_limit == -1:
            self._auto_limit = detect_limit()
        return self._auto_limit

    def thresholds(self, sample: Optional[MemorySample] = None) -> Thresholds:
        """The policy's thresholds in bytes, percentages resolved against the known limit:
        the policy's when it is a size, else the sample's (the probe's), else, for ``limit =
        "auto"``, the detected cgroup limit; with none, percentages stay off (None)."""
        memory = self._policy()
        limit = sample.limit if sample is not None else None
        if limit is None and memory.limit == "auto":
            limit = self.detected_limit()
        cached = self._thresholds
        if cached is not None and self._thresholds_limit == limit:
            return cached
        resolved = memory.resolve(limit)
        self._thresholds, self._thresholds_limit = resolved, limit
        return resolved

    # -- history and growth --------------------------------------------------------------------

    def record(self, now: float, usage: int) -> None:
        """Keep a sample (every one the monitor takes, between a cleanup's rounds too)."""
        with self.lock:
            self.history.append((now, usage))
            if self.peak is None or usage > self.peak:
                self.peak = usage

    def since_cleanup(self, last: Optional[int] = None) -> list[tuple[float, int]]:
        """The samples since the last cleanup (all of them when there was none), oldest
        first; with `last`, only that many of the newest."""
        since = self.fit_from
        with self.lock:
            newest = list(itertools.islice(reversed(self.history), last))
        return [(t, u) for t, u in reversed(newest) if since is None or t > since]

    def growth(self) -> Optional[float]:
        """Bytes per second over the recent samples since the last cleanup; None until two
        samples were taken after it. Nothing is carried across a cleanup: a burst that set
        one off says nothing of the quiet that may follow, and a growth carried from it
        would predict emergencies sample after sample in a process that no longer grows
        (docs/decisions.md). Reads only the samples the fit uses: it runs before every wait
        of the thread."""
        return recent_growth(self.since_cleanup(GROWTH_SAMPLES))

    def cleanup_began(self) -> Optional[float]:
        """The growth as a cleanup starts (what the app goes on allocating while the
        cleanup runs, which that cleanup allows for); not kept beyond it."""
        return self.growth()

    def cleanup_ended(self, at: float) -> None:
        """Fit growth only to the samples after `at` from now on (a fresh fit)."""
        self.fit_from = at

    def shown_growth(self, now: float, usage: int) -> Optional[float]:
        """Bytes per minute over the last `SHOWN_WINDOW` seconds of samples since the last
        cleanup, with `usage` read at `now` as the newest: what the surfaces show."""
        points = self.since_cleanup()
        if not points or points[-1][0] < now:
            points.append((now, usage))
        return window_growth(points, now)

    def forget(self) -> None:
        """In a forked child: the parent's samples say nothing of the child's growth."""
        self.lock = threading.Lock()
        self.history.clear()
        self.fit_from = None
        self.peak = None


def _close(probe: Probe) -> None:
    close = getattr(probe, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            logger.debug("memguard: closing probe %r failed", probe, exc_info=True)


@attrs.frozen(slots=True)
class MemoryStats:
    """A snapshot of memory and the stores.

    `sample` is a fresh reading; `level` the monitor's level for it (hysteresis included);
    `thresholds` the policy's thresholds in bytes for the detected limit (None when the policy
    cannot be resolved); `stores` counts and sizes per store, never job contents;
    `recent_cleanups` the latest emergency cleanups and periodic passes that evicted something,
    oldest first. `growth_per_minute` is the least-squares slope of usage over the samples
    of the last `SHOWN_WINDOW` seconds (none before the last cleanup, which would read as
    shrinkage), in bytes per minute: None once fewer than two samples fall in it;
    `time_to_limit` the seconds until usage reaches the limit at that rate (None when
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


GROWTH_SAMPLES: Final = 8
"""How many recent samples the predictive trigger fits its growth rate to."""

SHOWN_WINDOW: Final = 5.0
"""Seconds of samples behind the growth that /memory, the dashboard and `memguard monitor`
show: a short window, so the figure falls back to nothing within seconds once growth stops
(a long one kept a burst's rate on screen for minutes in an idle process)."""


def window_growth(points: Sequence[tuple[float, int]], now: float,
                  window: float = SHOWN_WINDOW) -> Optional[float]:
    """Growth in bytes per minute over the `points` (time, usage) no older than `window`
    seconds before `now`; None with fewer than two distinct instants in it."""
    return growth_rate([(t, u) for t, u in points if now - window <= t <= now])


def recent_growth(points: Sequence[tuple[float, int]]) -> Optional[float]:
    """Growth in bytes per second: the least-squares slope of the last few (time, usage)
    points; None with fewer than two distinct instants."""
    per_minute = growth_rate(list(points)[-GROWTH_SAMPLES:])
    return None if per_minute is None else per_minute / 60.0


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
