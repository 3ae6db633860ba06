"""What a Redis store's handle shows the manager and the monitor: its stats and its index."""

from __future__ import annotations

import threading
from typing import Any, Optional

import attrs

from memguard.stores.protocol import StoreStats


@attrs.frozen
class RedisStoreStats(StoreStats):
    """`StoreStats` of a Redis store, plus where it lives and whether it answered.

    When Redis cannot be reached, `reachable` is False, `error` says why, and the counts are
    the last ones read (zeros if none was).
    """

    backend: str = "redis"
    reachable: bool = True
    error: Optional[str] = None
    redis: Optional[str] = None
    redis_used_memory: Optional[int] = None
    redis_limit: Optional[int] = None


class _AnyKey:
    """`key in index.created` for `@touches`: any id may be in Redis; unknown ones are
    ignored when the batched reads are flushed."""

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str)


class RedisIndex:
    """What the manager and the monitor read of a handle's index: counts and bytes (as of
    the last pass or stats call), the batched reads of `@touches`, and the lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.created = _AnyKey()
        self.reads: dict[Any, None] = {}
        self.pins: dict[str, int] = {}  # this process's pins: id -> nesting count
        self.jobs = 0
        self.total_bytes = 0

    def __len__(self) -> int:
        return self.jobs

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str)

    def touch(self, key: Any) -> None:
        self.reads[key] = None
