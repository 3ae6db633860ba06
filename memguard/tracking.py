"""The side index of one store: creation times, recency, sizes and pins, under one lock.

The index never holds job values, only keys and a few numbers, so it costs under 200 bytes
per job. Its structures, each with one purpose:

- `reads`: a bounded deque the read path appends touched keys to: one C call, no lock, no
  clock. Like Caffeine's read buffer it is lossy: when more reads than its length arrive
  between two drains, the oldest are forgotten, which only blurs recency.
- `lru`: a plain dict of key -> size (None until weighed) in recency order, least recent
  first. Writes and passes drain `reads` into it under the lock (pop and re-insert moves a
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
import logging
import threading
from collections import deque
from collections.abc import Hashable, Iterator
from itertools import islice
from typing import Any, Callable, Optional

logger = logging.getLogger("memguard")

Key = Hashable
MAX_EPOCHS = 64
READ_BUFFER = 8192
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
        "epochs",
        "job_of",
        "lock",
        "lru",
        "pins",
        "reads",
        "sizer",
        "total_bytes",
        "unweighed",
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
        self.reads: deque[Key] = deque(maxlen=READ_BUFFER)
        self.created: dict[Key, float] = {}
        self.unweighed: dict[Key, None] = {}
        self.pins: dict[Key, int] = {}
        self.epochs: deque[Epoch] = deque()
        self.lock = threading.RLock()
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self.created)

    def __contains__(self, key: object) -> bool:
        return key in self.created

    # -- the read path -------------------------------------------------------------------

    def touch(self, key: Key) -> None:
        """Mark `key` most recently used. O(1), lock-free, never reads the clock."""
        self.reads.append(key)

    def drain_reads(self) -> None:
        """Apply buffered touches to the recency order, oldest first (lock held)."""
        reads, lru = self.reads, self.lru
        for _ in range(len(reads)):
            key = reads.popleft()
            size = lru.pop(key, _ABSENT)
            if size is not _ABSENT:
                lru[key] = size

    # -- mutations (caller holds the lock) -----------------------------------------------

    def add(self, key: Key, job: Any, now: float) -> None:
        """Index a new job created at `now`, or re-weigh a replaced one (keeping its age)."""
        if key in self.created:
            self.drain_reads()
            self._forget_size(key)
            del self.lru[key]
            self.lru[key] = None
        else:
            self.created[key] = now
            self.lru[key] = None
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
        return size

    def clear(self) -> None:
        self.lru.clear()
        self.reads.clear()
        self.created.clear()
        self.unweighed.clear()
        self.pins.clear()
        self.epochs.clear()
        self.total_bytes = 0

    def weigh_pending(self) -> None:
        """Weigh the jobs stored while active that have finished since."""
        for key in list(self.unweighed):
            try:
                job = self.job_of(key)
            except KeyError:
                self.unweighed.pop(key, None)
                continue
            if not self.is_active(key, job):
                del self.unweighed[key]
                self._store_size(key, job)

    def lay_epoch(self, now: float) -> None:
        """Date every touch so far as at or before `now` (a pass calls this once)."""
        self.drain_reads()
        if self.lru and isinstance(next(reversed(self.lru)), Epoch):
            return  # nothing touched since the last epoch: it already dates everything
        if len(self.epochs) >= MAX_EPOCHS:  # merge the oldest span into the next: conservative
            self._drop_epoch(self.epochs[0])
        epoch = Epoch(now)
        self.lru[epoch] = None
        self.epochs.append(epoch)

    # -- questions -----------------------------------------------------------------------

    def is_active(self, key: Key, job: Any) -> bool:
        """Pinned, or the store's `active` predicate says so. A failing predicate means yes."""
        if key in self.pins:
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

    def candidates(self, order: str) -> Iterator[Key]:
        """Evictable keys in `order` (`lru`, `oldest`, `largest`).

        The consumer removes each yielded key before asking for the next; one it keeps ends
        the iteration, so a budget can stop early without losing anything.
        """
        if order == "oldest":
            return self._oldest()
        if order == "largest":
            return self._largest()
        return self._least_recent(until=None)

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

    def _least_recent(self, *, until: Optional[Epoch]) -> Iterator[Key]:
        # Active jobs keep their place; `kept` counts the entries left in front of the scan.
        # The consumer removes what we yield, so the scan reads the order in chunks.
        self.drain_reads()
        kept = 0
        while True:
            chunk = list(islice(self.lru, kept, kept + _CHUNK))
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
                job = self._job_or_forget(key)
                if job is _ABSENT:
                    continue
                if self.is_active(key, job):
                    kept += 1
                    continue
                yield key
                if key in self.created:  # the consumer kept it: stop here
                    return

    def _oldest(self) -> Iterator[Key]:
        skipped = 0
        while True:
            chunk = list(islice(self.created, skipped, skipped + _CHUNK))
            if not chunk:
                return
            for key in chunk:
                job = self._job_or_forget(key)
                if job is _ABSENT:
                    continue
                if self.is_active(key, job):
                    skipped += 1
                    continue
                yield key
                if key in self.created:
                    return

    def _largest(self) -> Iterator[Key]:
        # O(n log n) when it evicts; documented in docs/decisions.md.
        weighed = sorted(((size, key) for key, size in self.lru.items() if size),
                         key=lambda pair: -pair[0])
        for _, key in weighed:
            if key not in self.created:
                continue
            job = self._job_or_forget(key)
            if job is _ABSENT or self.is_active(key, job):
                continue
            yield key
            if key in self.created:
                return

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
