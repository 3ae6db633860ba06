"""The tables behind a store's orders, and their upkeep: `OrderTables` and `LargestFirst`.

`OrderTables` keeps, for one store (a `JobIndex` owns one, as `Orders`, and calls it with
its lock held):

- `lru`: a plain dict of key -> size (None until weighed) in recency order, least recent
  first. `Epoch` markers (`memguard.index.orders`) laid into it at each pass date the
  touches coarsely, which is what idle expiry needs. It is also where the sizes live: one
  dict, not two, per job.
- `aged`: the age order the age scans walk (all jobs but parked ones, in creation order).
- `delivered`: finished jobs read at least once since they were seen finished, least
  recently read first, each with the stamp of its delivery: what `order = "delivered"`
  and the global emergency order (`memguard.eviction.tiers`) evict first.
- `finished`: finished jobs not delivered yet, in the order they were seen finished (at
  their write, or when a re-check found a job stored running finished in place), each with
  the stamp of that moment: the last tier of the global emergency order, oldest first.
  A job is in at most one of `delivered` and `finished`; active jobs are in neither.
- `parked`: active jobs taken out of `lru` and `aged` (with their size) because a scan had to
  step over too many active jobs: the scans then stay amortized O(1) per eviction however
  many jobs are active. A parked job seen finished goes back at the recent end of both.
- `largest`: None, or a `LargestFirst` heap of the weighed jobs, built the first time the
  `largest` order is asked for and kept up by every weighing from then on.

Their upkeep lives here: moving a key between them, taking it out, and compacting a table
that many deletions left sparse. The epoch markers in `lru`, the drain of reads, the finish
stamps and the scans that walk the tables are `memguard.index.orders`'.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable, Iterator
from math import isqrt
from typing import Any, Optional

Key = Hashable

#: The default of a `pop` that tells a missing key from a key whose value is None.
ABSENT: Any = object()


class LargestFirst:
    """The weighed jobs of a store in a heap of `(-size, seq, key)`, largest first.

    Entries are never deleted in place: a job re-weighed gets a new entry, and one that is
    stale (the job is gone, or its size is no longer the entry's) is skipped when popped.
    `seq` breaks ties (never the keys, which need not be comparable): among jobs of one size,
    the one weighed first comes first. When the heap holds twice the entries it had at its
    last rebuild (plus 64) it is rebuilt from the live sizes, O(n) once per O(n) pushes.
    """

    __slots__ = ("count", "heap", "limit", "used")

    def __init__(self, sizes: Iterable[tuple[Any, Optional[int]]]) -> None:
        self.heap: list[tuple[int, int, Key]] = []
        self.count = itertools.count()
        self.limit = 64
        self.used = True  # a largest-first walk ran since the last rebuild
        self.rebuild(sizes)

    def rebuild(self, sizes: Iterable[tuple[Any, Optional[int]]]) -> None:
        """Start again from `sizes` (key, size) pairs, in their order for equal sizes."""
        count = self.count = itertools.count()
        heap = [(-size, next(count), key) for key, size in sizes if size]
        heapq.heapify(heap)
        self.heap = heap
        self.limit = 2 * len(heap) + 64

    def push(self, key: Key, size: int) -> None:
        heapq.heappush(self.heap, (-size, next(self.count), key))


class OrderTables:
    """The recency, age, delivery and size tables of one store's jobs, and their upkeep."""

    __slots__ = ("aged", "aged_churn", "bound", "delivered", "delivered_churn",
                 "finished", "finished_churn", "largest", "lru", "lru_bound", "lru_churn",
                 "park_after", "parked", "tracks_delivered")

    def __init__(self, *, park_after: int) -> None:
        #: Active jobs a scan steps over (keeping them in place) before it parks the next.
        self.park_after = park_after
        self.lru: dict[Key, Optional[int]] = {}
        self.aged: dict[Key, None] = {}
        self.delivered: dict[Key, int] = {}
        self.finished: dict[Key, int] = {}
        # Only a store that evicts in the delivered order (or whose emergencies do) needs
        # `delivered` and `finished` fed; the others' drained reads and inserts skip that
        # work (`JobIndex.track_deliveries`).
        self.tracks_delivered = True
        self.parked: dict[Key, Optional[int]] = {}
        self.largest: Optional[LargestFirst] = None
        self.lru_churn = self.aged_churn = self.delivered_churn = self.finished_churn = 0
        self.bound = 256  # the churn that triggers a compaction (see `churned`)
        self.lru_bound = 64  # the same for `lru`, whose front every eviction reads

    def clear(self) -> None:
        self.lru.clear()
        self.aged.clear()
        self.delivered.clear()
        self.finished.clear()
        self.parked.clear()
        self.largest = None
        self.lru_churn = self.aged_churn = self.delivered_churn = self.finished_churn = 0

    # -- upkeep --------------------------------------------------------------------------

    def rewritten(self, key: Key) -> None:
        """A stored job was written again: a touch (back into the orders, at the recent end,
        if it was parked) and undelivered (a new value is not delivered until read)."""
        if key in self.parked:
            self.lru[key] = self.parked.pop(key)
            self.aged[key] = None
        else:
            self.lru[key] = self.lru.pop(key, None)
            self.lru_churn += 1
            if self.lru_churn > self.lru_bound:
                self.churned()
        self.unfinish(key)  # the write that follows says whether it is finished

    def unfinish(self, key: Key) -> None:
        """`key` is active again (or written again): out of `delivered` and `finished`."""
        self.undeliver(key)
        if self.finished.pop(key, ABSENT) is not ABSENT:
            self.churned(finished=1)

    def moved(self, key: Key) -> None:
        """`key` was read: to the recent end of `lru` (no delivery)."""
        size = self.lru.pop(key, ABSENT)
        if size is not ABSENT:
            self.lru[key] = size
            self.lru_churn += 1

    def discard(self, key: Key) -> Optional[int]:
        """Take `key` out of every order; returns its last known size."""
        if key in self.parked:
            size = self.parked.pop(key)
        else:
            size = self.lru.pop(key, None)
            self.aged.pop(key, None)
            self.lru_churn += 1
            self.aged_churn += 1
        # A job is in at most one tier; most removals find it in `finished` (evictions of
        # unread results, deletes) or in neither (the tables are empty when not tracked).
        finished = self.finished
        if finished and finished.pop(key, ABSENT) is not ABSENT:
            self.finished_churn += 1
        else:
            delivered = self.delivered
            if delivered and delivered.pop(key, ABSENT) is not ABSENT:
                self.delivered_churn += 1
        bound = self.bound  # `churned`, inlined: this is every removal's path
        if (self.lru_churn > self.lru_bound or self.aged_churn > bound
                or self.finished_churn > bound or self.delivered_churn > bound):
            self.churned()
        return size

    def park(self, key: Key) -> None:
        """Take active `key` out of the orders the scans walk (it keeps its size)."""
        self.unfinish(key)
        self.parked[key] = self.lru.pop(key, None)
        self.aged.pop(key, None)
        self.churned(lru=1, aged=1)

    def unpark(self, key: Key) -> None:
        """Parked `key` back at the recent end of both orders (as if just touched)."""
        self.lru[key] = self.parked.pop(key)
        self.aged[key] = None

    def undeliver(self, key: Key) -> None:
        if self.delivered.pop(key, ABSENT) is not ABSENT:
            self.churned(delivered=1)

    def weighed(self, key: Key, size: int) -> None:
        """`key` now weighs `size`: a heap entry, if the largest order is kept."""
        largest = self.largest
        if largest is None or not size:
            return
        largest.push(key, size)
        if len(largest.heap) > largest.limit:
            if largest.used:
                largest.rebuild(self.sizes())
                largest.used = False
            else:  # no largest-first walk since the last rebuild: stop paying for the heap
                self.largest = None

    def sizes(self) -> Iterator[tuple[Key, Optional[int]]]:
        """(key, size) of every job, least recent first, parked ones last."""
        yield from self.lru.items()
        yield from self.parked.items()

    def churned(self, *, lru: int = 0, aged: int = 0, delivered: int = 0,
                finished: int = 0) -> None:
        """Count deletions from `lru`, `aged`, `delivered` and `finished`, and compact each
        now and then.

        A dict keeps a deleted entry's slot until it resizes, and iteration from the front
        steps over every such slot: a store whose oldest jobs keep leaving would make each
        pass slower. Copying a dict once its churn passes 1/32 of the jobs keeps those slots
        few, at an amortized cost of 32 copied entries per deletion. (`bound` is kept for
        `discard`, which checks it inline.)
        """
        jobs = len(self.lru) + len(self.parked)
        bound = self.bound = max(256, jobs // 32)
        # `lru`'s front is read at every eviction (`next(iter(lru))` steps over each deleted
        # slot before it, about 1 ns a slot here) and a compaction copies every entry (about
        # 4 ns each): a bound b costs n/b * 4 + b/2 ns a removal, least at b = sqrt(8n).
        self.lru_bound = max(64, isqrt(8 * jobs))
        self.lru_churn += lru
        self.aged_churn += aged
        self.delivered_churn += delivered
        self.finished_churn += finished
        if self.delivered_churn > bound:
            self.delivered_churn = 0
            self.delivered = dict(self.delivered)
        if self.finished_churn > bound:
            self.finished_churn = 0
            self.finished = dict(self.finished)
        if self.lru_churn > self.lru_bound:
            self.lru_churn = 0
            self.lru = dict(self.lru)
        if self.aged_churn > bound:
            self.aged_churn = 0
            self.aged = dict(self.aged)
