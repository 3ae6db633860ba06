"""The side index of one store: creation times, recency, sizes and pins, under one lock.

The index never holds job values, only keys and a few numbers, so it costs under 200 bytes
per job. Its structures, each with one purpose:

- `reads`: the keys read since the last drain, a dict used as an ordered set. The read path
  adds its key with one C call: no lock, no clock. Nothing is lost and it holds each key at
  most once, so it never outgrows the store; among keys read between two drains, the order is
  that of their first read.
- `lru`: a plain dict of key -> size (None until weighed) in recency order, least recent
  first. Inserts and passes drain `reads` into it under the lock (pop and re-insert moves a
  key to the end). `Epoch` markers laid into it at each pass date the touches coarsely,
  which is what idle expiry needs.
- `created`: a dict of key -> creation time; dicts keep insertion order, so it is also the
  age order.
- `unweighed`: keys whose size is not known yet (the job was active when stored, and its
  result is still to come). A pass weighs those that have since finished.

Mutations happen with `lock` held; the store's write paths and the pipeline take it.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import threading
from collections import deque
from collections.abc import Hashable, Iterator
from itertools import islice
from typing import Any, Callable, Optional

logger = logging.getLogger("memguard")

Key = Hashable
MAX_EPOCHS = 64
_CHUNK = 256


class Epoch:
    """A marker in the LRU order: every job before it was last touched at or before `time`."""

    __slots__ = ("time",)

    def __init__(self, time: float) -> None:
        self.time = time

    def __repr__(self) -> str:
        return f"Epoch({self.time:g})"


class JobIndex:
    """Creation order, recency, sizes and pins of the jobs of one store."""

    __slots__ = (
        "active",
        "created",
        "created_churn",
        "epochs",
        "job_of",
        "lock",
        "lru",
        "lru_churn",
        "pins",
        "reads",
        "sizer",
        "total_bytes",
        "unweighed",
        "writing",
    )

    def __init__(
        self,
        *,
        job_of: Callable[[Key], Any],
        active: Callable[[Any], bool],
        sizer: Callable[[Any], int],
    ) -> None:
        self.job_of = job_of
        self.active = active
        self.sizer = sizer
        self.lru: dict[Key, Optional[int]] = {}
        self.reads: dict[Key, None] = {}
        self.created: dict[Key, float] = {}
        self.unweighed: dict[Key, None] = {}
        self.pins: dict[Key, int] = {}
        self.epochs: deque[Epoch] = deque()
        self.lock = threading.RLock()
        self.writing: Any = NOTHING  # the key an insert is storing, safe from its own bound
        self.total_bytes = 0
        self.created_churn = 0
        self.lru_churn = 0

    def __len__(self) -> int:
        return len(self.created)

    def __contains__(self, key: object) -> bool:
        return key in self.created

    # -- the read path -------------------------------------------------------------------

    def touch(self, key: Key) -> None:
        """Mark `key` most recently used. O(1), lock-free, never reads the clock.

        Unknown keys are ignored, so the read set never holds more keys than the store.
        """
        if key in self.created:
            self.reads[key] = None

    def drain_reads(self) -> None:
        """Move the keys read since the last drain to the recent end (lock held).

        `popitem` takes keys from the end one atomic call at a time, so a read racing with
        the drain is taken now or next time, never lost; and, unlike `del`, it leaves no
        deleted slots behind for later iterations to step over.
        """
        reads, lru = self.reads, self.lru
        if not reads:
            return
        batch = []
        try:
            while True:
                batch.append(reads.popitem()[0])
        except KeyError:
            pass
        for key in reversed(batch):  # first read first
            size = lru.pop(key, _ABSENT)
            if size is not _ABSENT:
                lru[key] = size
        self._churned(lru=len(batch))

    # -- mutations (caller holds the lock) -----------------------------------------------

    def add(self, key: Key, job: Any, now: float) -> None:
        """Index a new job created at `now`, or re-weigh a replaced one (keeping its age)."""
        self.drain_reads()  # reads before this write stay before it in the order
        if key in self.created:
            size = self.lru.pop(key)  # re-inserted below: the write is a touch
            self.lru[key] = size
            self._churned(lru=1)
        else:
            self.created[key] = now
            self.lru[key] = None
        self.reweigh(key, job)

    def reweigh(self, key: Key, job: Any) -> None:
        """Forget the size of `key` and weigh `job` now, or once it is no longer active."""
        self._forget_size(key)
        self._weigh_or_defer(key, job)

    def remove(self, key: Key) -> Optional[int]:
        """Forget `key`; returns its last known size."""
        if self.created.pop(key, _ABSENT) is _ABSENT:
            return None
        size = self.lru.pop(key, None)
        self.unweighed.pop(key, None)
        self.pins.pop(key, None)
        if size:
            self.total_bytes -= size
        self._churned(created=1, lru=1)
        return size

    def clear(self) -> None:
        self.lru.clear()
        self.reads.clear()
        self.created.clear()
        self.unweighed.clear()
        self.pins.clear()
        self.epochs.clear()
        self.total_bytes = 0
        self.created_churn = 0
        self.lru_churn = 0

    def weigh_pending(self) -> None:
        """Weigh the jobs stored while active that have finished since.

        The table is rebuilt rather than deleted from, so no dead slots pile up for the next
        pass to step over: the cost stays that of the jobs still pending.
        """
        if not self.unweighed:
            return
        pending: dict[Key, None] = {}
        for key in self.unweighed:
            try:
                job = self.job_of(key)
            except KeyError:
                continue
            if self.is_active(key, job):
                pending[key] = None
            else:
                self._store_size(key, job)
        self.unweighed = pending

    def lay_epoch(self, now: float, *, min_gap: float = 0.0) -> None:
        """Date every touch so far as at or before `now` (the idle rule, once per pass).

        No marker is laid within `min_gap` of the last one. When `MAX_EPOCHS` are kept, the
        older of the two closest markers goes: its span merges into the next one, which
        only makes those jobs look more recent (they are evicted later, never earlier).
        """
        self.drain_reads()
        if self.epochs and now - self.epochs[-1].time < min_gap:
            return
        if self.lru and isinstance(next(reversed(self.lru)), Epoch):
            return  # nothing touched since the last marker: it dates everything already
        if len(self.epochs) >= MAX_EPOCHS:
            pairs = zip(self.epochs, list(self.epochs)[1:])
            older, _ = min(pairs, key=lambda pair: pair[1].time - pair[0].time)
            self._drop_epoch(older)
        epoch = Epoch(now)
        self.lru[epoch] = None
        self.epochs.append(epoch)

    def _churned(self, *, created: int = 0, lru: int = 0) -> None:
        """Count deletions from `created` and `lru`, and compact each now and then.

        A dict keeps a deleted entry's slot until it resizes, and iteration from the front
        steps over every such slot: a store whose oldest jobs keep leaving would make each
        pass slower. Copying a dict once its churn passes 1/32 of the jobs keeps those slots
        few, at an amortized cost of 32 copied entries per deletion.
        """
        bound = max(256, len(self.created) // 32)
        self.created_churn += created
        self.lru_churn += lru
        if self.created_churn > bound:
            self.created_churn = 0
            self.created = dict(self.created)
        if self.lru_churn > bound:
            self.lru_churn = 0
            self.lru = dict(self.lru)

    # -- questions -----------------------------------------------------------------------

    def is_active(self, key: Key, job: Any) -> bool:
        """Pinned, or the store's `active` predicate says so. A failing predicate means yes."""
        if key in self.pins or (self.writing is not NOTHING and key == self.writing):
            return True
        try:
            return bool(self.active(job))
        except Exception:
            logger.exception("memguard: active predicate failed on job %r; keeping it", key)
            return True

    def size_of(self, key: Key) -> Optional[int]:
        return self.lru.get(key)

    def recency(self) -> list[Key]:
        """Job keys, least recently used first (epoch markers left out)."""
        with self.lock:
            self.drain_reads()
            return [key for key in self.lru if not isinstance(key, Epoch)]

    # -- candidates for eviction, in each order; active jobs are never yielded -------------

    def candidates(self, order: str, *, weighed_only: bool = False) -> Iterator[Key]:
        """Evictable keys in `order` (`lru`, `oldest`, `largest`); with `weighed_only`, only
        jobs of known, non-zero size (evicting others cannot bring a byte total down).

        The consumer removes each yielded key before asking for the next; one it keeps ends
        the iteration, so a budget can stop early without losing anything.
        """
        if order == "oldest":
            return self._oldest(weighed_only)
        if order == "largest":
            return self._largest(weighed_only)
        return self._least_recent(until=None, weighed_only=weighed_only)

    def idle_before(self, cutoff: float) -> Iterator[Key]:
        """Evictable keys whose last touch was at or before `cutoff` (epoch granularity)."""
        target = None
        for epoch in self.epochs:
            if epoch.time > cutoff:
                break
            target = epoch
        if target is None:
            return iter(())
        return self._least_recent(until=target)

    def created_before(self, cutoff: float) -> Iterator[Key]:
        """Evictable keys created at or before `cutoff`, oldest first."""
        for key in self._oldest():
            if self.created[key] > cutoff:
                return
            yield key

    def _least_recent(self, *, until: Optional[Epoch],
                      weighed_only: bool = False) -> Iterator[Key]:
        # Active jobs keep their place; `kept` counts the entries left in front of the scan.
        # The consumer removes what we yield, so the order is read in chunks.
        self.drain_reads()
        kept = 0
        size = 8  # most scans stop at the first key: start small, grow if they go on
        while True:
            chunk = list(islice(self.lru, kept, kept + size))
            size = min(size * 4, _CHUNK)
            if not chunk:
                return
            for key in chunk:
                if isinstance(key, Epoch):
                    if kept == 0:  # no job before it left to date
                        self._drop_epoch(key)
                    else:
                        kept += 1
                    if key is until:
                        return
                    continue
                if not self.evictable(key, weighed_only):
                    kept += key in self.created  # a forgotten key left the order
                    continue
                yield key
                if key in self.created:  # the consumer kept it: stop here
                    return

    def _oldest(self, weighed_only: bool = False) -> Iterator[Key]:
        kept = 0
        size = 8
        while True:
            chunk = list(islice(self.created, kept, kept + size))
            size = min(size * 4, _CHUNK)
            if not chunk:
                return
            for key in chunk:
                if not self.evictable(key, weighed_only):
                    kept += key in self.created
                    continue
                yield key
                if key in self.created:
                    return

    def _largest(self, weighed_only: bool = False) -> Iterator[Key]:
        # Weighed jobs, largest first (a heap: O(n) to build, O(log n) a victim), then those
        # of unknown or zero size in LRU order. Documented in docs/decisions.md.
        self.drain_reads()
        heap = [(-size, position, key) for position, (key, size) in enumerate(self.lru.items())
                if size]
        heapq.heapify(heap)
        while heap:
            _, _, key = heapq.heappop(heap)
            if key not in self.created or not self.evictable(key):
                continue
            yield key
            if key in self.created:
                return
        if not weighed_only:
            yield from self._least_recent(until=None)

    def evictable(self, key: Key, weighed_only: bool = False) -> bool:
        """Stored and not active (and, if asked, of known size); a key gone from a plain dict
        behind our back is forgotten."""
        if weighed_only and not self.lru.get(key):
            return False
        job = self._job_or_forget(key)
        return job is not _ABSENT and not self.is_active(key, job)

    # -- internals -----------------------------------------------------------------------

    def _job_or_forget(self, key: Key) -> Any:
        try:
            return self.job_of(key)
        except KeyError:  # removed behind our back (a plain dict): forget it
            self.remove(key)
            return _ABSENT

    def _weigh_or_defer(self, key: Key, job: Any) -> None:
        if self.is_active(key, job):
            self.unweighed[key] = None
        else:
            self.unweighed.pop(key, None)
            self._store_size(key, job)

    def _store_size(self, key: Key, job: Any) -> None:
        try:
            size = int(self.sizer(job))
        except Exception:
            logger.exception("memguard: size function failed on job %r; counting 0 bytes", key)
            size = 0
        self._forget_size(key)
        self.lru[key] = size
        self.total_bytes += size

    def _forget_size(self, key: Key) -> None:
        size = self.lru.get(key)
        if size:
            self.total_bytes -= size
            self.lru[key] = None

    def _drop_epoch(self, epoch: Epoch) -> None:
        self.lru.pop(epoch, None)
        with contextlib.suppress(ValueError):
            self.epochs.remove(epoch)


class _Absent:
    __slots__ = ()


_ABSENT: Any = _Absent()
#: No key: what `JobIndex.writing` holds outside an insert.
NOTHING: Any = _Absent()
