"""The orders a store's index walks to find victims: recency, age, delivery and size.

`Orders` is the tables of `memguard.index.tables` (`OrderTables`: `lru`, `aged`,
`delivered`, `finished`, `parked`, `largest`, and their upkeep) with what dates and reads
them: the `Epoch` markers laid into `lru` at each pass (which date the touches coarsely, as
idle expiry needs), the drain of the read set into `lru` (a read of a finished job is a
delivery), the stamps of deliveries and finishes the global emergency order compares, and
the scans.

The scans judge each key with the `look` function they are given (the index's: is the job
still stored, active, pinned, being written?) and yield the evictable ones. The consumer
removes each yielded key before asking for the next; one it keeps ends the iteration.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import Any, Callable, Optional

from memguard.index.tables import ABSENT, Key, LargestFirst, OrderTables

#: What a `look` function makes of a key: evictable; active (running); pinned; kept for
#: another reason (the job being written, a job of no size in a byte scan); gone.
EVICTABLE, ACTIVE, PINNED, KEEP, GONE = object(), object(), object(), object(), object()
Look = Callable[[Key, bool], object]

MAX_EPOCHS = 64
_CHUNK = 256

#: Stamps of deliveries and finishes, one counter for every store of the process, so the
#: global emergency order can compare them across stores without reading the clock. A
#: stamp dates the moment the index learned of the event (a drain, a write, a re-check).
STAMPS = itertools.count(1)
#: The mark of a write in a read set (`JobIndex.reads`): a touch, not a delivery. A read
#: marks None.
WRITTEN: Any = object()
_stamp = STAMPS.__next__


class Epoch:
    """A marker in the LRU order: every job before it was last touched at or before `time`."""

    __slots__ = ("time",)

    def __init__(self, time: float) -> None:
        self.time = time

    def __repr__(self) -> str:
        return f"Epoch({self.time:g})"


class Orders(OrderTables):
    """The orders of one store's jobs (`OrderTables`), with the drain of its reads, the
    finish stamps and the scans that find victims."""

    __slots__ = ("epochs",)

    def __init__(self, *, park_after: int) -> None:
        super().__init__(park_after=park_after)
        self.epochs: deque[Epoch] = deque()

    def clear(self) -> None:
        super().clear()
        self.epochs.clear()

    def drain(self, reads: dict[Key, Any], unweighed: dict[Key, None]) -> list[tuple[Key, Any]]:
        """Empty the read set `reads` into the recent end of `lru` (reads of jobs known
        finished, not `unweighed`, are deliveries; writes, marked `WRITTEN`, are not);
        returns the (key, mark) pairs taken, most recent first.

        `popitem` takes keys from the end one atomic call at a time, so a read racing with
        the drain (the read path takes no lock) is taken now or next time, never lost; and,
        unlike `del`, it leaves no deleted slots behind for later iterations to step over.
        """
        batch = []
        try:
            while True:
                batch.append(reads.popitem())
        except KeyError:
            pass
        lru, delivered, finished = self.lru, self.delivered, self.finished
        moved = left = 0
        tracks = self.tracks_delivered
        for key, mark in reversed(batch):  # least recently read first
            size = lru.pop(key, ABSENT)
            if size is not ABSENT:
                lru[key] = size
                if tracks and mark is None and key not in unweighed:  # finished: a delivery
                    if delivered.pop(key, ABSENT) is not ABSENT:
                        moved += 1
                    elif finished.pop(key, ABSENT) is not ABSENT:
                        left += 1
                    delivered[key] = _stamp()
        self.churned(lru=len(batch), delivered=moved, finished=left)
        return batch

    def finish(self, key: Key) -> None:
        """`key` was seen finished now (written finished, or found finished in place): it
        goes to the recent end of `finished` with a new stamp, unless already delivered."""
        if self.tracks_delivered and key not in self.delivered:
            finished = self.finished
            if finished.pop(key, ABSENT) is not ABSENT:
                self.finished_churn += 1
            finished[key] = _stamp()

    def lay_epoch(self, now: float, *, min_gap: float = 0.0) -> None:
        """Date every touch so far as at or before `now` (the idle rule, once per pass).

        No marker is laid within `min_gap` of the last one. When `MAX_EPOCHS` are kept, the
        older of the two closest markers goes: its span merges into the next one, which
        only makes those jobs look more recent (they are evicted later, never earlier).
        """
        if self.epochs and now - self.epochs[-1].time < min_gap:
            return
        if self.lru and isinstance(next(reversed(self.lru)), Epoch):
            return  # nothing touched since the last marker: it dates everything already
        if len(self.epochs) >= MAX_EPOCHS:
            pairs = zip(self.epochs, list(self.epochs)[1:])
            older, _ = min(pairs, key=lambda pair: pair[1].time - pair[0].time)
            self.drop_epoch(older)
        epoch = Epoch(now)
        self.lru[epoch] = None
        self.epochs.append(epoch)

    def drop_epoch(self, epoch: Epoch) -> None:
        self.lru.pop(epoch, None)
        with contextlib.suppress(ValueError):
            self.epochs.remove(epoch)

    def recency(self) -> list[Key]:
        """Job keys, least recently used first (markers left out, parked jobs last)."""
        return [key for key in self.lru if not isinstance(key, Epoch)] + list(self.parked)

    # -- scans: evictable keys in each order; active jobs are never yielded ---------------

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
