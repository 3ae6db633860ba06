"""The scans of a store's orders (memguard.index.orders): the evictable keys of the recency
and age orders front first (parking active jobs met past `park_after`), idle expiry by epoch,
delivered jobs first, a tier of the global emergency order, and largest first.

`OrderScans` is the part of `Orders` that walks; it holds the slots of the whole class, so
its methods and `Orders`' share one layout.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Optional

from memguard.index.marks import (
    ACTIVE,
    EVICTABLE,
    GONE,
    KEEP,
    PINNED,
    Epoch,
    Key,
    LargestFirst,
    Look,
)

#: Most keys a scan reads from an order at a time (it starts at 8 and grows fourfold).
_CHUNK = 256


class OrderScans:
    """Evictable keys in each order of one store (see `Orders`)."""

    __slots__ = ("aged", "aged_churn", "bound", "delivered", "delivered_churn", "epochs",
                 "finished", "finished_churn", "largest", "lru", "lru_bound", "lru_churn",
                 "park_after", "parked", "tracks_delivered")

    park_after: int
    lru: dict[Key, Optional[int]]
    aged: dict[Key, None]
    delivered: dict[Key, int]
    finished: dict[Key, int]
    parked: dict[Key, Optional[int]]
    epochs: deque[Epoch]
    largest: Optional[LargestFirst]

    if TYPE_CHECKING:  # the upkeep `Orders` defines
        def drop_epoch(self, epoch: Epoch) -> None: ...
        def park(self, key: Key) -> None: ...
        def undeliver(self, key: Key) -> None: ...
        def unfinish(self, key: Key) -> None: ...
        def sizes(self) -> Iterator[tuple[Key, Optional[int]]]: ...

    def idle_before(self, cutoff: float, look: Look) -> Iterator[Key]:
        """Evictable keys whose last touch was at or before `cutoff` (epoch granularity)."""
        target = None
        for epoch in self.epochs:
            if epoch.time > cutoff:
                break
            target = epoch
        if target is None:
            return iter(())
        return self.scan("lru", look, until=target)

    def scan(self, order: str, look: Look, *, until: Optional[Epoch] = None,
             weighed_only: bool = False, skip: Optional[dict[Key, int]] = None
             ) -> Iterator[Key]:
        """Evictable keys of `order` ("lru" or "aged"), front first, up to the epoch `until`.

        Active jobs keep their place (up to `park_after` of them; then they are parked);
        `kept` counts the entries left in front of the scan. The consumer removes what we
        yield, so the order is read in chunks, and looked up by name at each chunk: removals
        may compact it into a new dict. Keys in `skip` are stepped over; epoch markers (only
        in the recency order) date what precedes them.
        """
        kept = 0
        stepped = 0
        size = 8  # most scans stop at the first key: start small, grow if they go on
        while True:
            chunk = list(islice(getattr(self, order), kept, kept + size))
            size = min(size * 4, _CHUNK)
            if not chunk:
                return
            for key in chunk:
                if isinstance(key, Epoch):
                    if kept == 0:  # no job before it left to date
                        self.drop_epoch(key)
                    else:
                        kept += 1
                    if key is until:
                        return
                    continue
                if skip is not None and key in skip:
                    kept += 1
                    continue
                verdict = look(key, weighed_only)
                if verdict is EVICTABLE:
                    yield key
                    if key in self.lru:  # the consumer kept it: stop here
                        return
                elif verdict is ACTIVE or verdict is PINNED:
                    stepped += 1
                    if stepped > self.park_after:
                        self.park(key)
                    else:
                        kept += 1
                elif verdict is KEEP:
                    kept += 1

    def delivered_first(self, look: Look, weighed_only: bool) -> Iterator[Key]:
        """The delivered jobs, least recently read first; then the rest in LRU order.

        The second walk steps over the delivered ones the first kept (pinned, being written,
        of no size in a byte scan). A delivered job found running again (set back in place)
        is no longer delivered: its next result is not.
        """
        kept = 0
        size = 8
        while True:
            chunk = list(islice(self.delivered, kept, kept + size))
            size = min(size * 4, _CHUNK)
            if not chunk:
                break
            for key in chunk:
                verdict = look(key, weighed_only)
                if verdict is EVICTABLE:
                    yield key
                    if key in self.lru:  # the consumer kept it: stop here
                        return
                elif verdict is ACTIVE:
                    self.undeliver(key)
                elif verdict is not GONE:
                    kept += 1
        yield from self.scan("lru", look, weighed_only=weighed_only, skip=self.delivered)

    def tier(self, name: str, look: Look, limit: int) -> list[tuple[int, Key]]:
        """Up to `limit` evictable jobs of one tier of the global emergency order, front
        first, with their stamps, without evicting them: `delivered` (oldest delivery
        first) or `finished` (undelivered, oldest finished first).

        A tier with no table of its name here is empty: `expired` (jobs past a soft bound)
        until the soft bounds give it one. A job found active again leaves the tier (its
        next result is neither delivered nor finished yet); pinned jobs and the job being
        written stay in place and are stepped over. The walk reads the tier in chunks and
        looks it up by name at each chunk: a look may forget a job gone behind the index's
        back, and a removal may compact the table into a new dict.
        """
        found: list[tuple[int, Key]] = []
        kept = 0
        size = min(max(limit, 8), _CHUNK)
        while len(found) < limit:
            table: Optional[dict[Key, int]] = getattr(self, name, None)
            if table is None:  # a tier without a table here (`expired`, for now): empty
                break
            chunk = list(islice(table.items(), kept, kept + size))
            size = min(size * 4, _CHUNK)
            if not chunk:
                break
            for key, stamp in chunk:
                verdict = look(key, False)
                if verdict is EVICTABLE:
                    found.append((stamp, key))
                    kept += 1
                    if len(found) >= limit:
                        break
                elif verdict is ACTIVE:
                    self.unfinish(key)
                elif verdict is not GONE:
                    kept += 1
        return found

    def largest_first(self, look: Look, weighed_only: bool) -> Iterator[Key]:
        """Weighed jobs, largest first (O(log n) a victim, amortized); then, unless
        `weighed_only`, those of unknown or zero size in LRU order.

        An entry is popped when looked at. A job found active (or pinned) loses it until it
        is weighed again or seen finished (`JobIndex` pushes it back then); the job being
        written, and a yielded job the consumer kept, get theirs back when the walk ends.
        """
        largest = self.largest
        if largest is None:
            largest = self.largest = LargestFirst(self.sizes())
        largest.used = True
        held: list[tuple[int, int, Key]] = []
        try:
            while largest.heap and self.largest is largest:
                entry = heapq.heappop(largest.heap)
                size, _, key = entry
                current = self.lru.get(key)
                if current is None:
                    current = self.parked.get(key)
                if current != -size:
                    continue  # stale: gone, or weighed again since
                verdict = look(key, weighed_only)
                if verdict is EVICTABLE:
                    held.append(entry)  # back in the heap if the consumer keeps the key
                    yield key
                    if key in self.lru:  # the consumer kept it: stop here
                        return
                    held.pop()
                elif verdict is KEEP:
                    held.append(entry)
        finally:
            for entry in held:
                heapq.heappush(largest.heap, entry)
        if not weighed_only:
            yield from self.scan("lru", look)
