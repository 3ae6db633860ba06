"""The orders a store's index walks to find victims: recency, age, delivery and size.

`Orders` keeps, for one store (a `JobIndex` owns one and calls it with its lock held):

- `lru`: a plain dict of key -> size (None until weighed) in recency order, least recent
  first. `Epoch` markers laid into it at each pass date the touches coarsely, which is what
  idle expiry needs. It is also where the sizes live: one dict, not two, per job.
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

The scans judge each key with the `look` function they are given (the index's: is the job
still stored, active, pinned, being written?) and yield the evictable ones. The consumer
removes each yielded key before asking for the next; one it keeps ends the iteration.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from math import isqrt
from typing import Any, Optional

from memguard.index.activity import ABSENT as _ABSENT
from memguard.index.marks import MAX_EPOCHS, STAMPS, Epoch, Key, LargestFirst
from memguard.index.scans import OrderScans

_stamp = STAMPS.__next__


class Orders(OrderScans):
    """The recency, age, delivery and size orders of one store's jobs, and their scans
    (`OrderScans`, memguard.index.scans, which holds the slots)."""

    __slots__ = ()

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
        self.epochs: deque[Epoch] = deque()
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
        self.epochs.clear()
        self.largest = None
        self.lru_churn = self.aged_churn = self.delivered_churn = self.finished_churn = 0

    # -- upkeep --------------------------------------------------------------------------

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
            size = lru.pop(key, _ABSENT)
            if size is not _ABSENT:
                lru[key] = size
                if tracks and mark is None and key not in unweighed:  # finished: a delivery
                    if delivered.pop(key, _ABSENT) is not _ABSENT:
                        moved += 1
                    elif finished.pop(key, _ABSENT) is not _ABSENT:
                        left += 1
                    delivered[key] = _stamp()
        self.churned(lru=len(batch), delivered=moved, finished=left)
        return batch

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

    def finish(self, key: Key) -> None:
        """`key` was seen finished now (written finished, or found finished in place): it
        goes to the recent end of `finished` with a new stamp, unless already delivered."""
        if self.tracks_delivered and key not in self.delivered:
            finished = self.finished
            if finished.pop(key, _ABSENT) is not _ABSENT:
                self.finished_churn += 1
            finished[key] = _stamp()

    def unfinish(self, key: Key) -> None:
        """`key` is active again (or written again): out of `delivered` and `finished`."""
        self.undeliver(key)
        if self.finished.pop(key, _ABSENT) is not _ABSENT:
            self.churned(finished=1)

    def moved(self, key: Key) -> None:
        """`key` was read: to the recent end of `lru` (no delivery)."""
        size = self.lru.pop(key, _ABSENT)
        if size is not _ABSENT:
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
        if finished and finished.pop(key, _ABSENT) is not _ABSENT:
            self.finished_churn += 1
        else:
            delivered = self.delivered
            if delivered and delivered.pop(key, _ABSENT) is not _ABSENT:
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
        if self.delivered.pop(key, _ABSENT) is not _ABSENT:
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
