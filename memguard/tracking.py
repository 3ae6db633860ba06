"""The side index of one store: creation times, recency, sizes and pins, under one lock.

The index never holds job values, only keys and a few numbers, so it costs under 200 bytes
per job. Its structures, each with one purpose:

- `reads`: the keys read since the last drain, a dict used as an ordered set. The read path
  moves its key to the end with two C calls (pop, then insert): no lock, no clock. Nothing is
  lost and it holds each key at most once, so it never outgrows the store; the order of keys
  read between two drains is that of their last read, so the recency order is exact.
- `lru`: a plain dict of key -> size (None until weighed) in recency order, least recent
  first. Inserts and passes drain `reads` into it under the lock (pop and re-insert moves a
  key to the end). `Epoch` markers laid into it at each pass date the touches coarsely,
  which is what idle expiry needs.
- `created`: a dict of key -> creation time; dicts keep insertion order, so it is also the
  age order.
- `unweighed`: keys whose size is not known yet (the job was active when stored, and its
  result is still to come). They are weighed once seen finished.
- `known_active`: the jobs seen active (or pinned) at their last look, with `rotation`, the
  round-robin order in which they are looked at again in bounded batches (a few per insert,
  more per pass; finished ones found do not count against a batch). Its size is the
  `active` figure of `stats()`, kept without a scan.
- `aged`: the age order the age scans walk (all jobs but parked ones).
- `parked`: active jobs taken out of `lru` and `aged` (with their size) because a scan had to
  step over too many active jobs: the scans then stay amortized O(1) per eviction however
  many jobs are active. A parked job that is seen finished goes back at the recent end of
  both orders (as if just touched); until then it is not evictable, which it was not anyway.
- `failed`: jobs whose `active` predicate raised: warned about once, then not active.
- `delivered`: finished jobs read at least once since they were seen finished, in the
  recency order of those reads (least recent first): what `order = "delivered"` evicts
  first. A read counts when it is drained while the job is known finished (weighed); reads
  still pending when a job is seen finished are taken as reads of the running job, so a
  poll that found the job running never counts as its delivery. A write takes the job out
  (a new value is undelivered until read again).
- `observer`: None, or what a trace recorder listens with (`IndexObserver`): told of
  writes, finishes, drained reads and removals, never on the read path itself.

Mutations happen with `lock` held; the store's write paths and the pipeline take it. Every
live index is known (weakly) to a fork handler, so a child forked while another thread held
a store lock gets a fresh lock instead of one nobody will ever release (see `_before_fork`).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Hashable, Iterator
from itertools import islice
from typing import Any, Callable, Optional, Protocol

logger = logging.getLogger("memguard")

Key = Hashable
MAX_EPOCHS = 64
_CHUNK = 256
#: Active jobs a scan steps over (keeping them in place, so small stores keep an exact
#: recency order) before it parks the next ones it meets out of the orders it walks.
PARK_AFTER = 16
#: Known-active jobs looked at again by an insert over a bound (at most RECHECK_PER_INSERT
#: still active, RECHECK_MOST_PER_INSERT in all), and by a pass (at most RECHECK_PER_PASS
#: still active, any number of finished ones; an emergency pass looks at all of them).
RECHECK_PER_INSERT = 2
RECHECK_MOST_PER_INSERT = 16
RECHECK_PER_PASS = 256


class IndexObserver(Protocol):
    """What a trace recorder hears from an index (lock held; must be quick, never raise)."""

    def stored(self, key: Key, new: bool, size: Optional[int]) -> None:
        """A write: `new` for a key not stored before; `size` None while the job is active."""

    def finished(self, key: Key, size: int) -> None:
        """A job stored active was seen finished (no write) and weighed."""

    def read(self, keys: list[Key]) -> None:
        """Stored keys read since the last drain, least recently read first."""

    def removed(self, key: Key) -> None:
        """A job left the index (deleted by the application, or evicted)."""


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
        "__weakref__",
        "active",
        "aged",
        "aged_churn",
        "created",
        "created_churn",
        "delivered",
        "delivered_churn",
        "epochs",
        "failed",
        "job_of",
        "known_active",
        "lock",
        "lru",
        "lru_churn",
        "observer",
        "parked",
        "pinned_jobs",
        "pins",
        "pins_churn",
        "reads",
        "rotation",
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
        self.aged: dict[Key, None] = {}
        self.parked: dict[Key, Optional[int]] = {}
        self.known_active: dict[Key, None] = {}
        self.rotation: deque[Key] = deque()
        self.failed: dict[Key, None] = {}
        self.delivered: dict[Key, None] = {}
        self.observer: Optional[IndexObserver] = None
        self.epochs: deque[Epoch] = deque()
        self.lock = threading.RLock()
        self.writing: Any = NOTHING  # the key an insert is storing, safe from its own bound
        self.total_bytes = 0
        self.pinned_jobs = 0  # stored jobs with a pin (pins of absent keys do not count)
        self.created_churn = 0
        self.lru_churn = 0
        self.aged_churn = 0
        self.pins_churn = 0
        self.delivered_churn = 0
        _live_indexes.add(self)

    def __len__(self) -> int:
        return len(self.created)

    def __contains__(self, key: object) -> bool:
        return key in self.created

    # -- the read path -------------------------------------------------------------------

    def touch(self, key: Key) -> None:
        """Mark `key` most recently used. O(1), lock-free, never reads the clock.

        The key moves to the recent end of the read set (pop, then insert), so the order of
        reads between two drains is exact. Unknown keys are ignored, so the read set never
        holds more keys than the store.
        """
        if key in self.created:
            reads = self.reads
            reads.pop(key, None)
            reads[key] = None

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
        delivered, unweighed = self.delivered, self.unweighed
        moved = 0
        for key in reversed(batch):  # least recently read first
            size = lru.pop(key, _ABSENT)
            if size is not _ABSENT:
                lru[key] = size
                if key not in unweighed:  # known finished: a delivery
                    if delivered.pop(key, _ABSENT) is not _ABSENT:
                        moved += 1
                    delivered[key] = None
        self._churned(lru=len(batch), delivered=moved)
        if self.observer is not None:
            self.observer.read([key for key in reversed(batch) if key in self.created])

    # -- mutations (caller holds the lock) -----------------------------------------------

    def add(self, key: Key, job: Any, now: float) -> None:
        """Index a new job created at `now`, or re-weigh a replaced one (keeping its age)."""
        self.drain_reads()  # reads before this write stay before it in the order
        new = key not in self.created
        if not new:
            if key in self.parked:  # a write is a touch: back into the orders, at the end
                size = self.parked.pop(key)
                self.aged[key] = None
            else:
                size = self.lru.pop(key, None)
                self._churned(lru=1)
            self.lru[key] = size
            self._undeliver(key)  # a new value: not delivered until read again
        else:
            self.created[key] = now
            self.aged[key] = None
            self.lru[key] = None
            if key in self.pins:
                self.pinned_jobs += 1
        self.failed.pop(key, None)  # a new job: its predicate gets a new chance
        self.reweigh(key, job)
        if self.observer is not None:
            self.observer.stored(key, new, None if key in self.unweighed else self.size_of(key))

    def reweigh(self, key: Key, job: Any) -> None:
        """Forget the size of `key` and weigh `job` now, or once it is no longer active."""
        if key in self.parked:
            self._unpark(key)
        self._forget_size(key)
        self._weigh_or_defer(key, job)

    def remove(self, key: Key) -> Optional[int]:
        """Forget `key`; returns its last known size."""
        if self.created.pop(key, _ABSENT) is _ABSENT:
            return None
        if key in self.parked:
            size = self.parked.pop(key)
        else:
            size = self.lru.pop(key, None)
            self.aged.pop(key, None)
        self.unweighed.pop(key, None)
        self.known_active.pop(key, None)  # its `rotation` entry is dropped when reached
        self.failed.pop(key, None)
        self._undeliver(key)
        if self.pins.pop(key, None) is not None:
            self.pinned_jobs -= 1
            self._pins_churned()
        if size:
            self.total_bytes -= size
        self._churned(created=1, lru=1, aged=1)
        if self.observer is not None:
            self.observer.removed(key)
        return size

    def clear(self) -> None:
        self.lru.clear()
        self.reads.clear()
        self.created.clear()
        self.aged.clear()
        self.parked.clear()
        self.known_active.clear()
        self.rotation.clear()
        self.failed.clear()
        self.delivered.clear()
        self.unweighed.clear()
        self.pins = {}
        self.epochs.clear()
        self.total_bytes = 0
        self.pinned_jobs = 0
        self.created_churn = self.lru_churn = self.aged_churn = self.pins_churn = 0
        self.delivered_churn = 0

    def pin(self, key: Key) -> None:
        """One more pin on `key` (lock held); a pin of a job not stored yet waits for it."""
        count = self.pins.get(key, 0)
        self.pins[key] = count + 1
        if not count and key in self.created:
            self.pinned_jobs += 1
            self._mark_active(key)

    def unpin(self, key: Key) -> None:
        """One pin less on `key` (lock held); the last one makes the job evictable again, if
        it is not active, and re-weighs it (it may have changed while pinned)."""
        count = self.pins.get(key, 0)
        if count > 1:
            self.pins[key] = count - 1
            return
        if self.pins.pop(key, None) is None:
            return
        self._pins_churned()
        if key not in self.created:
            return
        self.pinned_jobs -= 1
        job = self._job_or_forget(key)
        if job is _ABSENT:
            return
        if self.is_active(key, job):
            self.unweighed[key] = None  # re-weighed once seen finished
        else:
            self._turned_inactive(key, job, reweigh=True)

    def recheck(self, active: Optional[int] = None, *, most: Optional[int] = None) -> None:
        """Look again at known-active jobs, round robin, for one lap at most: those that
        finished are weighed, taken back into the orders and no longer counted active.

        The lap stops after `active` jobs found still active (None: no limit) or `most`
        looks in all. Finished jobs do not count against `active`: each is found finished
        once in its life (amortized O(1) a job), so a pass after many jobs finished weighs
        them all, as the first pass after they finish always did, while a store of
        long-running jobs costs a bounded batch per pass, not a look at every one of them.
        """
        if len(self.rotation) > 2 * len(self.known_active) + 64:
            self._rebuild_rotation()  # stale entries: rebuild (amortized O(1))
        rotation, known = self.rotation, self.known_active
        lap = len(rotation) if most is None else min(most, len(rotation))
        still = 0
        for _ in range(lap):
            if active is not None and still >= active:
                return
            key = rotation.popleft()
            if key not in known:
                continue  # stale: removed or seen finished since
            job = self._job_or_forget(key)
            if job is _ABSENT:
                continue
            if self.is_active(key, job):
                rotation.append(key)
                still += 1
            else:
                self._turned_inactive(key, job)

    def weigh_pending(self) -> None:
        """Look at every known-active job again (kept for callers of the old name)."""
        self.recheck()

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

    def _churned(self, *, created: int = 0, lru: int = 0, aged: int = 0,
                 delivered: int = 0) -> None:
        """Count deletions from `created`, `lru`, `aged` and `delivered`, and compact each
        now and then.

        A dict keeps a deleted entry's slot until it resizes, and iteration from the front
        steps over every such slot: a store whose oldest jobs keep leaving would make each
        pass slower. Copying a dict once its churn passes 1/32 of the jobs keeps those slots
        few, at an amortized cost of 32 copied entries per deletion.
        """
        bound = max(256, len(self.created) // 32)
        self.created_churn += created
        self.lru_churn += lru
        self.aged_churn += aged
        self.delivered_churn += delivered
        if self.delivered_churn > bound:
            self.delivered_churn = 0
            self.delivered = dict(self.delivered)
        if self.created_churn > bound:
            self.created_churn = 0
            self.created = dict(self.created)
        if self.lru_churn > bound:
            self.lru_churn = 0
            self.lru = dict(self.lru)
        if self.aged_churn > bound:
            self.aged_churn = 0
            self.aged = dict(self.aged)

    def _pins_churned(self) -> None:
        """Give the pins table's memory back: a dict never shrinks by deletion alone."""
        self.pins_churn += 1
        if not self.pins:
            self.pins = {}
            self.pins_churn = 0
        elif self.pins_churn > max(64, 2 * len(self.pins)):
            self.pins = dict(self.pins)
            self.pins_churn = 0

    # -- questions -----------------------------------------------------------------------

    def is_active(self, key: Key, job: Any) -> bool:
        """Pinned, or the store's `active` predicate says so.

        A predicate that raises on a job is logged once (a warning, no traceback) and the job
        then counts as not active until it is written again: a job nobody can classify must
        not keep its memory forever (see docs/decisions.md).
        """
        if key in self.pins or (self.writing is not NOTHING and key == self.writing):
            return True
        if key in self.failed:
            return False
        try:
            return bool(self.active(job))
        except Exception as error:
            self.failed[key] = None
            logger.warning("memguard: the active predicate raised %s: %s on job %r; it counts "
                           "as not active (evictable) until written again",
                           type(error).__name__, error, key)
            return False

    def size_of(self, key: Key) -> Optional[int]:
        size = self.lru.get(key)
        return self.parked.get(key) if size is None and key in self.parked else size

    def keys(self) -> list[Key]:
        """Every job key, in creation order (parked ones included)."""
        return list(self.created)

    def recency(self) -> list[Key]:
        """Job keys, least recently used first (epoch markers left out; parked jobs, which
        go back at the recent end when they finish, come last)."""
        with self.lock:
            self.drain_reads()
            return [key for key in self.lru if not isinstance(key, Epoch)] + list(self.parked)

    # -- candidates for eviction, in each order; active jobs are never yielded -------------

    def candidates(self, order: str, *, weighed_only: bool = False) -> Iterator[Key]:
        """Evictable keys in `order` (`lru`, `oldest`, `largest`, `delivered`); with
        `weighed_only`, only jobs of known, non-zero size (evicting others cannot bring a
        byte total down).

        `delivered`: finished jobs already read (least recently read first), then the rest
        in LRU order, so a result nobody has fetched yet is the last thing a bound takes.

        The consumer removes each yielded key before asking for the next; one it keeps ends
        the iteration, so a budget can stop early without losing anything.
        """
        if order == "oldest":
            return self._oldest(weighed_only)
        if order == "largest":
            return self._largest(weighed_only)
        if order == "delivered":
            return self._delivered_first(weighed_only)
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
        """Evictable keys created at or before `cutoff`, oldest first.

        A parked job goes back at the end of the age order when it is seen finished, so the
        walk (which stops at the first younger job) reaches it at most one max_age later.
        """
        for key in self._oldest():
            if self.created[key] > cutoff:
                return
            yield key

    def _delivered_first(self, weighed_only: bool) -> Iterator[Key]:
        # The delivered jobs, least recently read first; then the rest in LRU order, the
        # delivered ones the first walk kept (pinned, being written, of no size in a byte
        # scan) stepped over. A delivered job found running again (set back in place) is no
        # longer delivered: its next result is not.
        self.drain_reads()
        delivered = self.delivered
        kept = 0
        size = 8
        while True:
            chunk = list(islice(delivered, kept, kept + size))
            size = min(size * 4, _CHUNK)
            if not chunk:
                break
            for key in chunk:
                verdict = self._look(key, weighed_only)
                if verdict is _EVICTABLE:
                    yield key
                    if key in self.created:  # the consumer kept it: stop here
                        return
                elif verdict is _ACTIVE and key not in self.pins and key != self.writing:
                    self._undeliver(key)
                elif verdict is not _GONE:
                    kept += 1
        yield from self._least_recent(until=None, weighed_only=weighed_only, skip=delivered,
                                      drain=False)

    def _least_recent(self, *, until: Optional[Epoch], weighed_only: bool = False,
                      skip: Optional[dict[Key, None]] = None,
                      drain: bool = True) -> Iterator[Key]:
        """Evictable keys in recency order, least recent first, up to the epoch `until`."""
        if drain:
            self.drain_reads()
        return self._scan("lru", until=until, weighed_only=weighed_only, skip=skip)

    def _oldest(self, weighed_only: bool = False) -> Iterator[Key]:
        """Evictable keys in creation order, oldest first."""
        return self._scan("aged", weighed_only=weighed_only)

    def _scan(self, order: str, *, until: Optional[Epoch] = None, weighed_only: bool = False,
              skip: Optional[dict[Key, None]] = None) -> Iterator[Key]:
        # The one scan of both orders. Active jobs keep their place (up to PARK_AFTER of
        # them; then they are parked); `kept` counts the entries left in front of the scan.
        # The consumer removes what we yield, so the order is read in chunks, and looked up
        # by name at each chunk: removals may compact it into a new dict. Keys in `skip` are
        # stepped over; epoch markers (only in the recency order) date what precedes them.
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
                        self._drop_epoch(key)
                    else:
                        kept += 1
                    if key is until:
                        return
                    continue
                if skip is not None and key in skip:
                    kept += 1
                    continue
                verdict = self._look(key, weighed_only)
                if verdict is _EVICTABLE:
                    yield key
                    if key in self.created:  # the consumer kept it: stop here
                        return
                elif verdict is _ACTIVE:
                    stepped += 1
                    if stepped > PARK_AFTER:
                        self._park(key)
                    else:
                        kept += 1
                elif verdict is _KEEP:
                    kept += 1

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
        return self._look(key, weighed_only) is _EVICTABLE

    def _look(self, key: Key, weighed_only: bool) -> object:
        """What a scan makes of `key`: evictable, active, kept for another reason (the job
        being written, a job of unknown or zero size in a byte scan) or gone."""
        if weighed_only and not self.size_of(key):
            return _ACTIVE if key in self.unweighed else _KEEP
        job = self._job_or_forget(key)
        if job is _ABSENT:
            return _GONE
        if self.writing is not NOTHING and key == self.writing:
            return _KEEP
        if self.is_active(key, job):
            self._mark_active(key)
            return _ACTIVE
        return _EVICTABLE

    # -- internals -----------------------------------------------------------------------

    def _mark_active(self, key: Key) -> None:
        if key not in self.known_active:
            self.known_active[key] = None
            self.rotation.append(key)
            if len(self.rotation) > 2 * len(self.known_active) + 64:
                self._rebuild_rotation()  # stale entries of jobs gone or finished: O(1) amortized

    def _rebuild_rotation(self) -> None:
        self.rotation = deque(self.known_active)

    def _turned_inactive(self, key: Key, job: Any, *, reweigh: bool = False) -> None:
        """`key` was seen not active: count it so, take it back into the orders, weigh it.

        A read of a job stored active that is still waiting to be drained is taken now, as a
        read of the running job (it moves the job in the recency order but is no delivery).
        """
        self.known_active.pop(key, None)
        if key in self.parked:
            self._unpark(key)
        if key in self.unweighed and self.reads.pop(key, _ABSENT) is not _ABSENT:
            size = self.lru.pop(key, _ABSENT)
            if size is not _ABSENT:
                self.lru[key] = size
                self._churned(lru=1)
        if reweigh or key in self.unweighed:
            self.unweighed.pop(key, None)
            self._store_size(key, job)
            if self.observer is not None:
                self.observer.finished(key, self.size_of(key) or 0)

    def _park(self, key: Key) -> None:
        """Take active `key` out of the orders the scans walk (it keeps its size)."""
        self._undeliver(key)
        size = self.lru.pop(key, None)
        self.aged.pop(key, None)
        self.parked[key] = size
        self._churned(lru=1, aged=1)

    def _undeliver(self, key: Key) -> None:
        if self.delivered.pop(key, _ABSENT) is not _ABSENT:
            self._churned(delivered=1)

    def _unpark(self, key: Key) -> None:
        self.lru[key] = self.parked.pop(key)
        self.aged[key] = None

    def _job_or_forget(self, key: Key) -> Any:
        try:
            return self.job_of(key)
        except KeyError:  # removed behind our back (a plain dict): forget it
            self.remove(key)
            return _ABSENT

    def _weigh_or_defer(self, key: Key, job: Any) -> None:
        if self.is_active(key, job):
            self.unweighed[key] = None
            self._mark_active(key)
        else:
            self.unweighed.pop(key, None)
            self.known_active.pop(key, None)
            self._store_size(key, job)

    def _store_size(self, key: Key, job: Any) -> None:
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
        self._forget_size(key)
        if key in self.parked:
            self.parked[key] = size
        else:
            self.lru[key] = size
        self.total_bytes += size

    def _forget_size(self, key: Key) -> None:
        size = self.size_of(key)
        if size:
            self.total_bytes -= size
            if key in self.parked:
                self.parked[key] = None
            else:
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
#: What `JobIndex._look` makes of a key.
_EVICTABLE, _ACTIVE, _KEEP, _GONE = object(), object(), object(), object()


# -- fork safety ----------------------------------------------------------------------------

_live_indexes: weakref.WeakSet[JobIndex] = weakref.WeakSet()
#: How long a fork waits, at most, for the store locks other threads hold.
FORK_QUIESCE_SECONDS = 1.0
_held_for_fork: list[Any] = []


def _snapshot() -> list[JobIndex]:
    """The live indexes (a store created by another thread meanwhile may make one copy fail
    with "changed size during iteration": try again)."""
    for _ in range(100):
        try:
            return list(_live_indexes)
        except RuntimeError:
            continue
    return []


def _before_fork() -> None:
    """Quiesce writers: take every store lock (waiting at most FORK_QUIESCE_SECONDS in all),
    so the child starts from indexes no thread was in the middle of changing."""
    deadline = time.monotonic() + FORK_QUIESCE_SECONDS
    for index in _snapshot():
        lock = index.lock
        if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            _held_for_fork.append(lock)


def _after_fork_in_parent() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()


def _after_fork_in_child() -> None:
    """Every store lock is new in the child: a lock another thread held at the fork can never
    be released there (that thread does not exist in the child)."""
    _held_for_fork.clear()  # the old locks stay held by nobody; nothing uses them again
    for index in _snapshot():
        index.lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
