"""The side index of one store: creation times, recency, sizes, pins and activity, under one
lock. `JobIndex` is the facade the stores, rules and the pipeline use; it keeps what the
write path reads on every insert (`created`, `reads`, `unweighed`, `pins`, `total_bytes`)
and delegates the rest to four collaborators:

- `Orders` (memguard.index.orders): the recency, age, delivery and size orders the eviction
  scans walk (`lru`, `aged`, `delivered`, `parked`, `epochs`, the largest-first heap);
- `Sizes` (memguard.index.sizes): the size function, the jobs still to be weighed, the sizes;
- `ActiveJobs` (memguard.index.activity): the jobs seen active, looked at again round robin;
- `Pins` (memguard.index.activity): pin counts.

The split keeps the insert path's Python calls few: the facade reads its collaborators'
dicts directly where a call per insert would show (`known_active`, `unweighed` and `pins`
are the collaborators' own dicts, never replaced).

The index never holds job values, only keys and a few numbers, so it costs under 200 bytes
per job. Its own structures:

- `reads`: the keys read since the last drain, a dict used as an ordered set. The read path
  moves its key to the end with two C calls (pop, then insert): no lock, no clock. Nothing is
  lost and it holds each key at most once, so it never outgrows the store; the order of keys
  read between two drains is that of their last read, so the recency order is exact.
  A write while reads are pending joins the set too (marked `WRITTEN`: a touch, never a
  delivery) instead of draining it, so the order of reads and writes stays exact without a
  drain per write. The set is drained into the recency order under the lock when an order
  is walked (a scan, a pass, an eviction whose least recent candidate has a pending touch).
- `created`: a dict of key -> creation time; dicts keep insertion order, so it is also the
  age order.
- `unweighed`: keys whose size is not known yet (the job was active when stored, and its
  result is still to come). They are weighed once seen finished. Sizes live in the recency
  order (`Orders.lru`: key -> size); `total_bytes` is their sum.
- `failed`: jobs whose `active` predicate raised: warned about once, then not active.
- `delivered` (in `Orders`): a read counts as a delivery when it is drained while the job is
  known finished (weighed); reads still pending when a job is seen finished are taken as
  reads of the running job, so a poll that found the job running never counts as its
  delivery. A write takes the job out (a new value is undelivered until read again).
- `finished` (in `Orders`): the finished jobs not delivered yet, stamped when the index
  learned they finished: at their write, or, for a job stored running and completed in
  place (the store never sees that write), at the re-check that found it finished (a few
  at each insert over a bound, a batch at each monitor sample and pass, all of them at an
  emergency). `tier` walks these two for the global emergency order.
- `observer`: None, or what a trace recorder listens with (`IndexObserver`): told of
  writes, finishes, drained reads and removals, never on the read path itself.

Mutations happen with `lock` held; the store's write paths and the pipeline take it. Every
live index is known (weakly) to a fork handler, so a child forked while another thread held
a store lock gets a fresh lock instead of one nobody will ever release (see `_before_fork`).
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Hashable, Iterator
from operator import attrgetter
from typing import Any, Callable, Optional, Protocol

from memguard._logging import logger
from memguard.index.activity import ABSENT as _ABSENT
from memguard.index.activity import ActiveJobs, Pins
from memguard.index.orders import (
    ACTIVE,
    EVICTABLE,
    GONE,
    KEEP,
    PINNED,
    STAMPS,
    WRITTEN,
    Epoch,
    Orders,
)
from memguard.index.sizes import Sizes

Key = Hashable
#: Active jobs a scan steps over (keeping them in place, so small stores keep an exact
#: recency order) before it parks the next ones it meets out of the orders it walks.
PARK_AFTER = 16
#: Known-active jobs looked at again by an insert over a bound (at most RECHECK_PER_INSERT
#: still active, RECHECK_MOST_PER_INSERT in all), and by a pass (at most RECHECK_PER_PASS
#: still active, any number of finished ones; an emergency pass looks at all of them).
RECHECK_PER_INSERT = 2
RECHECK_MOST_PER_INSERT = 16
RECHECK_PER_PASS = 256
#: Known-active jobs the monitor looks at again at each sample (at most this many still
#: active, any number of finished ones): the index learns within about a sample that a job
#: stored running finished in place, so a client's read after that counts as its delivery.
RECHECK_PER_SAMPLE = 64
_stamp = STAMPS.__next__


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


class _Nothing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<nothing>"


#: No key: what `JobIndex.writing` holds outside an insert.
NOTHING: Any = _Nothing()


class JobIndex:
    """Creation order, recency, sizes and pins of the jobs of one store."""

    __slots__ = ("__weakref__", "active", "activity", "created", "created_churn", "defer_weighing",
                 "deferred", "failed", "job_of", "known_active", "lock", "mean_size", "observer",
                 "orders", "pin_table", "pins", "reads", "resync", "returned", "returned_seq",
                 "sizes", "status", "total_bytes", "unweighed", "watches_written", "writing",
                 "written")

    # The collaborators' structures, read-only here (tests, tools, `stats()`).
    lru = property(attrgetter("orders.lru"), doc="Key -> size, least recently used first.")
    aged = property(attrgetter("orders.aged"), doc="The age order the age scans walk.")
    delivered = property(attrgetter("orders.delivered"), doc="Delivered jobs, by last read.")
    parked = property(attrgetter("orders.parked"), doc="Active jobs out of the orders.")
    epochs = property(attrgetter("orders.epochs"), doc="The markers laid in `lru`.")
    rotation = property(attrgetter("activity.rotation"), doc="Known-active, round robin.")
    pinned_jobs = property(attrgetter("pin_table.jobs"), doc="Stored jobs with a pin.")

    @property
    def sizer(self) -> Callable[[Any], int]:
        """The store's size function (a policy reload may set another)."""
        return self.sizes.sizer

    @sizer.setter
    def sizer(self, sizer: Callable[[Any], int]) -> None:
        self.sizes.sizer = sizer

    def __init__(
        self,
        *,
        job_of: Callable[[Key], Any],
        active: Callable[[Any], bool],
        sizer: Callable[[Any], int],
    ) -> None:
        self.job_of = job_of
        self.active = active
        self.created: dict[Key, float] = {}
        #: Key -> when it was last stored, oldest write first: the `max_running` watch, kept
        #: only while the store's plan has that bound (`watches_written`).
        self.written: dict[Key, float] = {}
        self.watches_written = False
        self.reads: dict[Key, Any] = {}  # key -> None (a read) or WRITTEN
        self.failed: dict[Key, None] = {}
        self.orders = Orders(park_after=PARK_AFTER)
        self.sizes = Sizes(self.orders, sizer)
        self.unweighed = self.sizes.unweighed  # same dict: it is never replaced
        self.activity = ActiveJobs()
        self.known_active = self.activity.known  # same dict: it is never replaced
        self.pin_table = Pins()
        self.pins = self.pin_table.counts  # same dict: it is never replaced
        self.observer: Optional[IndexObserver] = None
        self.lock = threading.RLock()
        self.writing: Any = NOTHING  # the key an insert is storing, safe from its own bound
        #: (creation time, seq, key) of jobs back from parking, which sit at the young end
        #: of the age order: the age walks take them at their real age (`_age_walk`).
        self.returned: list[tuple[float, int, Key]] = []
        self.returned_seq = itertools.count()
        #: Set in a forked child whose parent had a thread inside a change of this index: the
        #: store compares its keys with the index at its next pass (`repair_after_fork`).
        self.resync = False
        self.total_bytes = 0
        self.created_churn = 0
        #: Weigh finished jobs later, not at their insert (`defer`): the keys waiting, in a
        #: list (stale entries of jobs evicted or re-weighed since are skipped), and the
        #: mean weighed size at the last catch-up, which stands for the size of a victim
        #: evicted before it was weighed.
        self.defer_weighing = False
        self.deferred: list[Key] = []
        self.mean_size = 0
        #: (field, values) when `active` is a status test on a field (the default kind of
        #: predicate): the write path then tests a dict job inline, without the call.
        self.status: Optional[tuple[str, frozenset[Any]]] = None
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
        """Move the keys read since the last drain to the recent end (lock held)."""
        if not self.reads:
            return
        batch = self.orders.drain(self.reads, self.unweighed)
        if self.observer is not None:
            self.observer.read([key for key, mark in reversed(batch)
                                if mark is None and key in self.created])

    # -- mutations (caller holds the lock) -----------------------------------------------

    def add(self, key: Key, job: Any, now: float) -> None:
        """Index a new job created at `now`, or re-weigh a replaced one (keeping its age)."""
        if self.watches_written:
            written = self.written
            written.pop(key, None)
            written[key] = now
        reads = self.reads
        if reads:
            if self.observer is not None or len(reads) > 2 * len(self.created) + 64:
                self.drain_reads()  # reads before this write stay before it in the order
            else:  # the write joins the read set, after the reads before it (no drain)
                reads.pop(key, None)
                reads[key] = WRITTEN
        created = self.created
        if (key not in created and self.defer_weighing and self.observer is None
                and not self.failed and key not in self.pins and self.writing is NOTHING):
            # The commonest write, inline: a new key, weighed later. A new key is in none
            # of `unweighed`, `known_active`, `parked` or the tiers (they hold stored keys).
            status = self.status
            if status is not None and type(job) is dict:
                try:
                    active = job.get(status[0]) in status[1]
                except TypeError:  # an unhashable status is no known status
                    active = False
                if not active:
                    created[key] = now
                    orders = self.orders
                    orders.aged[key] = None
                    orders.lru[key] = None
                    deferred = self.deferred
                    deferred.append(key)
                    if len(deferred) & 15 == 1:  # one in 16 weighed now: keeps `mean_size`,
                        self._weigh_sample(key, job)  # by which a burst of bytes is seen
                    elif len(deferred) > 4 * len(created) + 64:
                        self._compact_deferred()
                    if orders.tracks_delivered:
                        orders.finished[key] = _stamp()
                    return
        new = key not in created
        if new:
            self.created[key] = now
            orders = self.orders
            orders.aged[key] = None
            orders.lru[key] = None
            if key in self.pins:
                self.pin_table.jobs += 1
        else:
            if key in self.orders.parked:
                self._returning(key)
            self.orders.rewritten(key)  # a touch; a new value is undelivered until read
            self.total_bytes += self.sizes.forget(key)
        if self.failed:  # (a truth test first: this table is nearly always empty)
            self.failed.pop(key, None)  # a new job: its predicate gets a new chance
        self._weigh_or_defer(key, job)
        if self.observer is not None:
            self.observer.stored(key, new, None if key in self.unweighed else self.size_of(key))

    def reweigh(self, key: Key, job: Any) -> None:
        """Forget the size of `key` and weigh `job` now, or once it is no longer active."""
        if key in self.orders.parked:
            self._returning(key)
            self.orders.unpark(key)
        self.orders.unfinish(key)  # another job under the key: finished and read anew
        self.total_bytes += self.sizes.forget(key)
        self._weigh_or_defer(key, job)

    def remove(self, key: Key) -> Optional[int]:
        """Forget `key`; returns its last known size."""
        if self.created.pop(key, _ABSENT) is _ABSENT:
            return None
        size = self.orders.discard(key)
        self.written.pop(key, None)
        # Truth tests before pops: these tables are empty most of the time, and a test costs
        # less than a method call (this runs at every eviction).
        if self.unweighed:
            self.unweighed.pop(key, None)
        if self.known_active:
            self.known_active.pop(key, None)  # its `rotation` entry is dropped when reached
        if self.failed:
            self.failed.pop(key, None)
        if key in self.pins and self.pin_table.forget(key):
            self.pin_table.jobs -= 1
        if size:
            self.total_bytes -= size
        self.created_churn += 1  # compact now and then (see `Orders.churned`)
        if self.created_churn > 256 and self.created_churn > len(self.created) >> 5:
            self.created_churn = 0
            self.created = dict(self.created)
        if self.observer is not None:
            self.observer.removed(key)
        return size

    def clear(self) -> None:
        self.reads.clear()
        self.created.clear()
        self.written.clear()
        self.unweighed.clear()
        self.failed.clear()
        self.orders.clear()
        self.activity.clear()
        self.pin_table.clear()
        self.returned.clear()
        self.deferred = []
        self.total_bytes = self.created_churn = 0

    def pin(self, key: Key) -> None:
        """One more pin on `key` (lock held); a pin of a job not stored yet waits for it."""
        if self.pin_table.add(key) and key in self.created:
            self.pin_table.jobs += 1
            self.activity.mark(key)

    def unpin(self, key: Key) -> None:
        """One pin less on `key` (lock held); the last one makes the job evictable again, if
        it is not active, and re-weighs it (it may have changed while pinned)."""
        if not self.pin_table.drop(key) or key not in self.created:
            return
        self.pin_table.jobs -= 1
        job = self._job_or_forget(key)
        if job is _ABSENT:
            return
        if self.is_active(key, job):
            self.unweighed[key] = None  # re-weighed once seen finished
        else:
            self._turned_inactive(key, job, reweigh=True)

    def track_deliveries(self, on: bool) -> None:
        """Feed the delivered set from drained reads (`on`), or stop and forget it: only a
        store evicting in the delivered order needs it (three dict operations a read)."""
        self.orders.tracks_delivered = on
        if not on:
            self.orders.delivered.clear()
            self.orders.finished.clear()

    def recheck(self, active: Optional[int] = None, *, most: Optional[int] = None) -> None:
        """Look again at known-active jobs, round robin (`ActiveJobs.recheck`): those that
        finished are weighed, taken back into the orders and no longer counted active."""
        if self.activity.rotation:
            self.activity.recheck(self._job_or_forget, self.is_active, self._turned_inactive,
                                  active, most)


    def tier(self, name: str, limit: int) -> list[tuple[int, Key]]:
        """Up to `limit` evictable jobs of a tier of the global emergency order, with their
        stamps, front first, none evicted (lock held): `delivered` (oldest delivery first),
        `finished` (undelivered, oldest finished first). See `Orders.tier`."""
        self.weigh_deferred()  # an emergency spends its budget by sizes
        self.drain_reads()
        return self.orders.tier(name, self._look, limit)

    def in_tier(self, name: str, key: Key, stamp: int) -> bool:
        """Whether `key` is still in tier `name` with `stamp` (not read, written, evicted
        or seen running since `tier` named it) and evictable (lock held)."""
        table: Optional[dict[Key, int]] = getattr(self.orders, name, None)
        return (table is not None and table.get(key) == stamp
                and self._look(key, False) is EVICTABLE)

    def lay_epoch(self, now: float, *, min_gap: float = 0.0) -> None:
        """Date every touch so far as at or before `now` (the idle rule, once per pass; see
        `Orders.lay_epoch`)."""
        self.drain_reads()
        self.orders.lay_epoch(now, min_gap=min_gap)

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
            return True if self.active(job) else False  # noqa: SIM210 - no bool() call
        except Exception as error:
            self.failed[key] = None
            logger.warning("memguard: the active predicate raised %s: %s on job %r; it counts "
                           "as not active (evictable) until written again",
                           type(error).__name__, error, key)
            return False

    def size_of(self, key: Key) -> Optional[int]:
        orders = self.orders
        size = orders.lru.get(key)
        return orders.parked.get(key) if size is None and key in orders.parked else size

    def keys(self) -> list[Key]:
        """Every job key, in creation order (parked ones included)."""
        return list(self.created)

    def recency(self) -> list[Key]:
        """Job keys, least recently used first (epoch markers left out; parked jobs, which
        go back at the recent end when they finish, come last)."""
        with self.lock:
            self.drain_reads()
            return self.orders.recency()

    # -- candidates for eviction, in each order; active jobs are never yielded -------------

    def candidates(self, order: str, *, weighed_only: bool = False) -> Iterator[Key]:
        """Evictable keys in `order` (`lru`, `oldest`, `largest`, `delivered`: the scans of
        `Orders`); with `weighed_only`, only jobs of known, non-zero size (evicting others
        cannot bring a byte total down). The consumer removes each yielded key before asking
        for the next; one it keeps ends the iteration, so a budget can stop early."""
        if self.deferred and (weighed_only or order == "largest"):
            self.weigh_deferred()  # sizes are what these orders go by
        if order == "oldest":
            if self.returned:
                return self._age_walk(None, weighed_only)
            return self.orders.scan("aged", self._look, weighed_only=weighed_only)
        self.drain_reads()
        if order == "largest":
            return self.orders.largest_first(self._look, weighed_only)
        if order == "delivered":
            # Asked for by a rule the policy does not name (a user's, or one added with
            # add_rule): feed the delivered set from now on (until then: LRU order).
            self.track_deliveries(True)
            return self.orders.delivered_first(self._look, weighed_only)
        return self.orders.scan("lru", self._look, weighed_only=weighed_only)

    def idle_before(self, cutoff: float) -> Iterator[Key]:
        """Evictable keys whose last touch was at or before `cutoff` (epoch granularity)."""
        self.drain_reads()
        return self.orders.idle_before(cutoff, self._look)

    def created_before(self, cutoff: float) -> Iterator[Key]:
        """Evictable keys created at or before `cutoff`, oldest first (jobs back from parking
        included, at their creation time: see `_age_walk`)."""
        if self.returned:
            yield from self._age_walk(cutoff, False)
            return
        for key in self.orders.scan("aged", self._look):
            if self.created[key] > cutoff:
                return
            yield key

    def written_before(self, cutoff: float) -> Iterator[Key]:
        """Active jobs last stored at or before `cutoff`, oldest write first (`max_running`).

        Jobs met that are no longer active leave the watch (a job set back to running in
        place, without a store write, is not watched again); pinned ones stay, checked again
        at the next pass. The consumer removes each yielded key before asking for the next;
        one it keeps ends the iteration.
        """
        written, seen = self.written, set()
        while written:
            key = next(iter(written))
            if written[key] > cutoff or key in seen:
                return
            job = self._job_or_forget(key)
            if job is _ABSENT:
                written.pop(key, None)
            elif key in self.pins:
                seen.add(key)
                written[key] = written.pop(key)  # to the end, its time kept
            elif not self.is_active(key, job):
                written.pop(key, None)
            else:
                yield key
                if key in written:
                    return

    def evictable(self, key: Key, weighed_only: bool = False) -> bool:
        """Stored and not active (and, if asked, of known size); a key gone from a plain dict
        behind our back is forgotten."""
        return self._look(key, weighed_only) is EVICTABLE

    def _look(self, key: Key, weighed_only: bool) -> object:
        """What a scan makes of `key` (the verdicts of memguard.index.orders): evictable, active,
        pinned, kept for another reason (the job being written, a job of unknown or zero
        size in a byte scan) or gone. Active and pinned jobs join the round robin."""
        if weighed_only and not self.size_of(key):
            if key in self.unweighed:
                return PINNED if key in self.pins else ACTIVE
            return KEEP
        job = self._job_or_forget(key)
        if job is _ABSENT:
            return GONE
        if self.writing is not NOTHING and key == self.writing:
            return KEEP
        if self.is_active(key, job):
            self.activity.mark(key)
            return PINNED if key in self.pins else ACTIVE
        return EVICTABLE

    def _age_walk(self, cutoff: Optional[float], weighed_only: bool) -> Iterator[Key]:
        """Evictable keys oldest first (created at or before `cutoff`, if given): the age
        order merged with the jobs back from parking, which sit at its young end.

        A parked job that finishes goes back at the recent end of the age order (finding its
        place there would cost O(n)); its creation time goes on the `returned` heap, and this
        walk takes each such job when the age order reaches that time. So `max_age` evicts it
        at its age, not up to one `max_age` late, and `order = "oldest"` sees its real age.
        """
        created = self.created
        for key in self.orders.scan("aged", self._look, weighed_only=weighed_only):
            when = created[key]
            limit = when if cutoff is None or when < cutoff else cutoff
            if self.returned and self.returned[0][0] <= limit:
                for early in self._returned_until(limit, weighed_only):
                    yield early
                    if early in created:  # the consumer kept it: stop here
                        return
                if key not in created:  # itself back from parking, taken just now
                    continue
            if cutoff is not None and when > cutoff:
                return
            yield key
            if key in created:  # kept (the scan stops too)
                return
        for early in self._returned_until(cutoff, weighed_only):
            yield early
            if early in created:
                return

    def _returned_until(self, limit: Optional[float], weighed_only: bool) -> Iterator[Key]:
        """Evictable jobs back from parking created at or before `limit` (None: any), oldest
        first. Entries of jobs gone (or parked again: they get a new one) are dropped; those
        of jobs kept (active, pinned, written) stay for the next walk."""
        heap, created = self.returned, self.created
        held: list[tuple[float, int, Key]] = []
        try:
            while heap and (limit is None or heap[0][0] <= limit):
                entry = heapq.heappop(heap)
                when, _, key = entry
                if created.get(key, _ABSENT) != when or key in self.orders.parked:
                    continue  # stale
                verdict = self._look(key, weighed_only)
                if verdict is EVICTABLE:
                    yield key
                    if key in created:  # kept by the consumer, which stops here
                        held.append(entry)
                        return
                elif verdict is not GONE:
                    held.append(entry)
        finally:
            for entry in held:
                heapq.heappush(heap, entry)

    def _returning(self, key: Key) -> None:
        """Parked `key` goes back into the orders: note its creation time for the age walks.
        The heap is rebuilt without stale entries when it holds twice the jobs (plus 64)."""
        heap = self.returned
        heapq.heappush(heap, (self.created[key], next(self.returned_seq), key))
        if len(heap) > 2 * len(self.created) + 64:
            created, parked, seen = self.created, self.orders.parked, set()
            kept = []
            for entry in heap:
                when, _, job = entry
                if created.get(job, _ABSENT) == when and job not in seen and (
                        job not in parked or job == key):
                    seen.add(job)
                    kept.append(entry)
            heapq.heapify(kept)
            self.returned = kept

    def repair_after_fork(self) -> None:
        """Make the index consistent again in a forked child whose parent had another thread
        inside a change of it (holding the lock longer than the fork waits: a slow size
        function, predicate, rule or store method).

        `created` is the truth (a write sets it first, a removal drops it first); the rest is
        brought in line with it without calling the store's predicate or size function (this
        runs inside `os.fork()`):

        - the job an insert was writing is no longer protected as such;
        - entries of jobs no longer created go; a job in no order goes back at the recent end
          of both; epoch markers left half laid or half dropped go;
        - a job of unknown size that nobody is to weigh (the thread was in the size function
          or the predicate) is marked unweighed and known active: the next re-check (an insert
          over a bound, a pass) asks the predicate and weighs it;
        - the byte total and the pinned count are summed again; the largest-first heap goes
          (rebuilt when next asked for);
        - `resync` is set: the store compares its keys with the index at its next pass (the
          thread may have been inside the store's own write method).

        Reads being drained at the fork are lost (their jobs keep their place); evictions the
        thread had made but not yet finished are neither released nor reported in the child
        (the parent finishes them). Pins stay: the child cannot tell which thread took them.
        """
        self.writing = NOTHING
        created, orders, unweighed = self.created, self.orders, self.unweighed
        lru, aged, parked = orders.lru, orders.aged, orders.parked
        for table in (lru, aged, parked, orders.delivered, orders.finished, unweighed,
                      self.failed, self.known_active):
            for key in [k for k in table if not isinstance(k, Epoch) and k not in created]:
                del table[key]
        laid = set(orders.epochs)
        for marker in [k for k in lru if isinstance(k, Epoch) and k not in laid]:
            del lru[marker]
        orders.epochs = deque(marker for marker in orders.epochs if marker in lru)
        total = 0
        for key in created:
            if key in parked:
                size = lru.pop(key, None)
                if parked[key] is None and size is not None:
                    parked[key] = size
                aged.pop(key, None)
                size = parked[key]
            else:
                size = lru.setdefault(key, None)
                aged.setdefault(key, None)
            if size is None:
                unweighed[key] = None
            else:
                total += size
            if key in unweighed:
                self.activity.mark(key)
        self.activity.rotation = deque(self.known_active)
        self.total_bytes = total
        self.pin_table.jobs = sum(1 for key in self.pins if key in created)
        orders.largest = None
        self.resync = True

    # -- internals -----------------------------------------------------------------------

    def _turned_inactive(self, key: Key, job: Any, *, reweigh: bool = False) -> None:
        """`key` was seen not active: count it so, take it back into the orders, weigh it
        (a job weighed already gets back the heap entry a largest-first walk dropped).

        A pending read of a job stored active is taken now, as a read of the running job
        (it moves the job in the recency order but is no delivery), after the reads made
        before it."""
        self.known_active.pop(key, None)
        orders = self.orders
        if key in orders.parked:
            self._returning(key)
            orders.unpark(key)
        if key in self.unweighed:
            # The reads pending are drained first, in their order, while the job still
            # counts as running: its own read moves it without being a delivery, and a read
            # of another job made before it stays before it.
            self.drain_reads()
            reweigh = True
        if reweigh:
            self.unweighed.pop(key, None)
            self.total_bytes += self.sizes.store(key, job)
            if self.observer is not None:
                self.observer.finished(key, self.size_of(key) or 0)
        elif orders.largest is not None:
            orders.weighed(key, orders.lru.get(key) or 0)
        if key not in orders.finished:  # finished now, as far as the index can tell
            orders.finish(key)

    def defer(self, on: bool) -> None:
        """Weigh finished jobs at the next catch-up (`weigh_deferred`: a pass, a monitor
        sample, `stats()`, an emergency) instead of at their insert (`on`), or weigh them
        at insert again (catching up first). Only a plan without a byte bound or the
        `largest` order defers: nothing on its insert path needs a size."""
        if not on:
            self.weigh_deferred()
        self.defer_weighing = on

    def _weigh_sample(self, key: Key, job: Any) -> None:
        """Weigh one deferred job at its insert and blend its size into `mean_size` (by
        eighths): `unweighed_bytes` then estimates what the deferred jobs hold, so that a
        burst of large jobs wakes the monitor before they are all weighed."""
        size = self.sizes.store(key, job)
        self.total_bytes += size
        mean = self.mean_size
        self.mean_size = size if not mean else (7 * mean + size) // 8

    @property
    def intake_bytes(self) -> int:
        """Bytes held by estimate: the weighed total plus the deferred jobs at the mean size
        (an overcount by the deferred jobs weighed since, which the next catch-up clears)."""
        return self.total_bytes + len(self.deferred) * self.mean_size

    def weigh_deferred(self) -> None:
        """Weigh the jobs whose weighing was deferred (lock held), and note the mean size."""
        deferred = self.deferred
        if not deferred:
            return
        self.deferred = []
        lru, unweighed = self.orders.lru, self.unweighed
        for key in deferred:
            if lru.get(key, 0) is None and key not in unweighed:  # still stored, unweighed
                job = self._job_or_forget(key)
                if job is not _ABSENT:  # seen finished at its write, weighed as it would
                    self.total_bytes += self.sizes.store(key, job)  # have been there
        weighed = len(self.created) - len(unweighed)
        if weighed > 0 and self.total_bytes > 0:
            self.mean_size = self.total_bytes // weighed

    def _compact_deferred(self) -> None:
        """Drop the stale entries of the deferred list (jobs gone or weighed since)."""
        lru, unweighed = self.orders.lru, self.unweighed
        seen: set[Key] = set()
        kept = []
        for key in self.deferred:
            if lru.get(key, 0) is None and key not in unweighed and key not in seen:
                seen.add(key)
                kept.append(key)
        self.deferred = kept

    def _job_or_forget(self, key: Key) -> Any:
        try:
            return self.job_of(key)
        except KeyError:  # removed behind our back (a plain dict): forget it
            self.remove(key)
            return _ABSENT

    def _weigh_or_defer(self, key: Key, job: Any) -> None:
        orders = self.orders
        if self.is_active(key, job):
            self.unweighed[key] = None
            self.activity.mark(key)
            if orders.finished:
                orders.unfinish(key)  # written running again: not finished
        else:
            if self.unweighed:
                self.unweighed.pop(key, None)
            if self.known_active:
                self.known_active.pop(key, None)
            if self.defer_weighing and self.observer is None:
                deferred = self.deferred
                deferred.append(key)
                if len(deferred) > 4 * len(self.created) + 64:
                    self._compact_deferred()
            else:
                self.total_bytes += self.sizes.store(key, job)
            if orders.tracks_delivered:  # `Orders.finish`, inlined: every insert's path
                # (a key stored before was taken out by `rewritten` or `reweigh` first,
                # so this lands at the recent end)
                orders.finished[key] = _stamp()


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


#: The indexes whose lock another thread still held when the fork went ahead (weakly: an
#: index that dies meanwhile drops out).
_torn_at_fork: weakref.WeakSet[JobIndex] = weakref.WeakSet()


def _before_fork() -> None:
    """Quiesce writers: take every store lock (waiting at most FORK_QUIESCE_SECONDS in all),
    so the child starts from indexes no thread was in the middle of changing. An index whose
    lock stays held (slow work under it: a size function, a predicate, a rule) is noted, and
    the child repairs it (`_after_fork_in_child`)."""
    deadline = time.monotonic() + FORK_QUIESCE_SECONDS
    _torn_at_fork.clear()
    for index in _snapshot():
        lock = index.lock
        if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            _held_for_fork.append(lock)
        else:
            _torn_at_fork.add(index)


def _after_fork_in_parent() -> None:
    _torn_at_fork.clear()
    while _held_for_fork:
        _held_for_fork.pop().release()


def _after_fork_in_child() -> None:
    """Every store lock is new in the child: a lock another thread held at the fork can never
    be released there (that thread does not exist in the child). An index that thread was
    changing is repaired (`JobIndex.repair_after_fork`): no user code runs here."""
    _held_for_fork.clear()  # the old locks stay held by nobody; nothing uses them again
    torn = list(_torn_at_fork)
    _torn_at_fork.clear()
    for index in _snapshot():
        index.lock = threading.RLock()
    for index in torn:
        try:
            index.repair_after_fork()
        except Exception:  # never fail a fork: the index stays as the parent left it
            logger.exception("memguard: could not repair a store index after fork")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
