"""What the jobs of one store weigh: the size function, the jobs still to be weighed, and
each job's size (`Sizes`; a `JobIndex` owns one and calls it with its lock held).

A job is weighed once it is seen finished: while it is active (running, or pinned) its result
is still to come, so it waits in `unweighed`. Sizes are kept as the job's value in the
recency order (`Orders.lru`: one dict per job, not two) and, while the `largest` order is
kept, pushed onto its heap. The byte total is the index's (`JobIndex.total_bytes`, read on
every bounded insert): `store` and `forget` return how much it changes.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Callable

from memguard._logging import logger
from memguard.index.orders import Orders

Key = Hashable


class Sizes:
    """The size function, the jobs waiting to be weighed, and the recorded sizes."""

    __slots__ = ("orders", "sizer", "unweighed")

    def __init__(self, orders: Orders, sizer: Callable[[Any], int]) -> None:
        self.orders = orders
        self.sizer = sizer
        self.unweighed: dict[Key, None] = {}  # never replaced: the index reads it directly

    def store(self, key: Key, job: Any) -> int:
        """Weigh `job` now and record its size as that of `key` (which is in the recency
        order, not parked: every caller takes it back first); returns the change to the
        byte total. A size function that raises or returns a negative number counts 0
        bytes, with a warning: a job nobody can weigh must not stop the store."""
        try:
            size = int(self.sizer(job))
        except Exception as error:
            logger.warning("memguard: the size function raised %s: %s on job %r; counting 0 "
                           "bytes", type(error).__name__, error, key)
            size = 0
        if size < 0:
            logger.warning("memguard: the size function returned %d for job %r; a size cannot "
                           "be negative: counting 0 bytes", size, key)
            size = 0
        orders = self.orders
        lru = orders.lru
        old = lru.get(key)
        lru[key] = size
        if orders.largest is not None:
            orders.weighed(key, size)
        return size - old if old else size

    def forget(self, key: Key) -> int:
        """`key` (not parked) has no known size any more; returns the change to the total."""
        lru = self.orders.lru
        size = lru.get(key)
        if not size:
            return 0
        lru[key] = None
        return -size
