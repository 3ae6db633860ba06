"""Where the monitor's numbers come from: the probe, the thresholds in bytes, and the recent
samples with the growth fitted to them.

`Readings` builds the probe the policy's scope and limit call for (unless the manager was
given one), resolves percentage thresholds against the known limit (cached per limit), and
keeps the (time, usage) history from which growth is measured: since the last cleanup, whose
drop would otherwise read as shrinkage; right after one, the growth measured before it.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable
from typing import Optional

from memguard._logging import logger
from memguard.controller import GROWTH_SAMPLES, recent_growth
from memguard.memory import MemorySample, Probe, detect_limit, make_probe
from memguard.options import MemoryPolicy, Thresholds

__all__ = ["Readings"]


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
        self.growth_before: Optional[float] = None  # bytes/s when the last cleanup began
        self._own_probe: Optional[Probe] = None
        self._auto_limit: Optional[int] = None
        self._thresholds: Optional[Thresholds] = None
        self._thresholds_limit: Optional[int] = -1

    # -- probe and thresholds ------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the probe and thresholds built from the old policy (a policy change)."""
        if self._own_probe is not None:
            _close(self._own_probe)
        self._own_probe = None
        self._auto_limit = None
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

    def detected_limit(self) -> int:
        """The cgroup's limit, else physical RAM (read once per policy)."""
        if self._auto_limit is None:
            self._auto_limit = detect_limit()
        return self._auto_limit

    def thresholds(self, sample: Optional[MemorySample] = None) -> Thresholds:
        """The policy's thresholds in bytes, percentages resolved against the known limit:
        the policy's when it is a size, else the sample's (the probe's), else, for ``limit =
        "auto"``, the detected cgroup limit or physical RAM."""
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
        with self.lock:
            self.history.append((now, usage))

    def since_cleanup(self, last: Optional[int] = None) -> list[tuple[float, int]]:
        """The samples since the last cleanup (all of them when there was none), oldest
        first; with `last`, only that many of the newest."""
        since = self.fit_from
        with self.lock:
            newest = list(itertools.islice(reversed(self.history), last))
        return [(t, u) for t, u in reversed(newest) if since is None or t >= since]

    def growth(self) -> Optional[float]:
        """Bytes per second over the recent samples; right after a cleanup (too few samples
        since), the growth measured before it: the app is likely still growing as fast.
        Reads only the samples the fit uses: it runs before every wait of the thread."""
        growth = recent_growth(self.since_cleanup(GROWTH_SAMPLES))
        return self.growth_before if growth is None else growth

    def cleanup_began(self) -> Optional[float]:
        """Remember the growth as a cleanup starts; returns it."""
        self.growth_before = self.growth()
        return self.growth_before

    def cleanup_ended(self, at: float) -> None:
        """Fit growth only to the samples after `at` from now on."""
        self.fit_from = at

    def forget(self) -> None:
        """In a forked child: the parent's samples say nothing of the child's growth."""
        self.lock = threading.Lock()
        self.history.clear()
        self.fit_from = self.growth_before = None


def _close(probe: Probe) -> None:
    close = getattr(probe, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            logger.debug("memguard: closing probe %r failed", probe, exc_info=True)
