"""`RedisFigures`: what a Redis store's `stats()` shows, and when it stops asking Redis.

The figures are read from Redis now when it answers; when it cannot be reached, the last
ones read come back with `reachable=False` and the error, never an exception: `/memory` and
`/metrics` must still answer. A Redis known to be away (an operation of this store found it
unreachable and nothing got an answer since) is not asked again for `unreachable_retry`
seconds: a host that drops packets costs the connect timeout per try, which every request
would otherwise pay, per store.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Callable, Optional

from memguard.errors import RedisStoreError
from memguard.redis._core import RedisCore
from memguard.redis.index import RedisIndex, RedisStoreStats
from memguard.redis.offload import PENDING, Offloaded

#: Seconds after a failed stats read during which `stats()` reports the store unreachable
#: without asking Redis again: a host that drops packets costs the connect timeout (2 s) per
#: try, which `/memory` and `/metrics` would otherwise pay at every request, per store.
UNREACHABLE_RETRY = 5.0


class RedisFigures:
    """The stats of store `name`; `limit` gives the Redis budget set in code or by the
    policy (None: the server's `maxmemory`)."""

    def __init__(self, name: str, core: RedisCore, index: RedisIndex,
                 evictions: Counter[str], *, limit: Callable[[], Optional[int]]) -> None:
        self.name = name
        self.core = core
        self.index = index  # shows jobs and bytes as of the last read
        self.evictions = evictions  # the handle's counts, by cause
        self.limit = limit
        self.unreachable_retry = UNREACHABLE_RETRY
        #: The error of the last stats read or pass that failed; None after one that did not.
        self.last_error: Optional[str] = None
        self._last: Optional[RedisStoreStats] = None
        self._reads = Offloaded(f"memguard-redis-stats-{name}", join=True)

    def known_unreachable(self) -> Optional[float]:
        """Seconds since an operation found Redis unreachable, if none got an answer since
        and that was less than `unreachable_retry` ago; else None."""
        failed = self.core.link.unavailable
        if failed is not None and self.core.link.answered_at < failed[0]:
            age = time.monotonic() - failed[0]
            if 0 <= age < self.unreachable_retry:
                return age
        return None

    def stats(self, wait: float) -> RedisStoreStats:
        """Counts read from Redis now, waited for at most `wait` seconds; when it cannot be
        reached (or does not answer in time), the last ones with `reachable=False` and the
        error.

        Once any operation of this store (stats included) found Redis unreachable, Redis is
        not asked again for `unreachable_retry` seconds, unless a script of this store (a
        read, a write, a pass) got an answer since: the store is reported unreachable at
        once, with that error and its age.
        """
        age = self.known_unreachable()
        failed = self.core.link.unavailable
        if age is not None and failed is not None:
            return self.unreachable(f"{failed[1]} ({age:.1f} s ago; tried again "
                                    f"{self.unreachable_retry:g} s after a failure)")
        try:
            read = self._reads.call(self.read, wait)
        except RedisStoreError as error:
            self.last_error = str(error)  # an unreachable Redis: remembered by the link
            return self.unreachable(str(error))
        if read is PENDING:
            return self.unreachable(f"Redis at {self.core.link.where} did not answer stats "
                                    f"within {wait:g} s (the last figures read)")
        return read  # type: ignore[no-any-return]

    def read(self) -> RedisStoreStats:
        """The stats as Redis answers them now (may raise RedisStoreError)."""
        jobs, active, size, pinned = self.core.figures()
        used, limit = self.core.link.memory()
        self.last_error = None
        self.index.jobs, self.index.total_bytes = jobs, size
        stats = RedisStoreStats(
            name=self.name, jobs=jobs, active=active, pinned=pinned, bytes=size, unweighed=0,
            evictions=dict(self.evictions), redis=self.core.link.where, redis_used_memory=used,
            redis_limit=self.limit() or limit or None)
        self._last = stats
        return stats

    def unreachable(self, error: str) -> RedisStoreStats:
        """Stats of a store Redis did not answer for: the last figures read (by a stats
        call or a pass; zeros if none)."""
        last = self._last
        return RedisStoreStats(
            name=self.name, jobs=self.index.jobs, active=last.active if last else 0,
            pinned=last.pinned if last else 0, bytes=self.index.total_bytes,
            unweighed=0, evictions=dict(self.evictions), reachable=False,
            error=error, redis=self.core.link.where)
