"""The side index of one store: creation times, recency, sizes, pins and activity, under one
lock. `JobIndex` is the facade the stores, rules and the pipeline use; it keeps what the
write path reads on every insert (`created`, `reads`, `unweighed`, `pins`, `total_bytes`)
and delegates the rest to four collaborators:

- `Orders` (memguard.index.orders): the recency, age, delivery and size orders the eviction
  scans walk (`lru`, `aged`, `delivered`, `parked`, `epochs`, the largest-first heap);
- `Sizes` (memguard.index.sizes): the size function, the jobs still to be weighed, the sizes;
- `ActiveJobs` (memguard.index.activity): the jobs seen active, looked at again round robin;
- `Pins` (memguard.index.activity): pin counts.

Its own methods come in parts, mixins of this one class over the state `IndexBase` declares
(memguard.index.base): this module has the read and write paths (with the commonest insert
inline), removals, pins and the questions; `Walks` (memguard.index.walks) the eviction
candidates, emergency tiers, `max_running` watch and re-checks; `Weighing`
(memguard.index.weighing) the weighing, now or deferred; `ForkRepair` (memguard.index.fork)
the fork hooks and the repair of a torn index.

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
a store lock gets a fresh lock instead of one nobody will ever release (memguard.index.fork).
"""

from __future__ import annotations

import itertools
import threading
from operator import attrgetter
from typing import Any, Callable, Optional

from memguard._logging import logger
from memguard.index.activity import ABSENT as _ABSENT
from memguard.index.activity import ActiveJobs, Pins
from memguard.index.base import NOTHING, IndexObserver, Key
from memguard.index.fork import ForkRepair, live_indexes
from memguard.index.marks import STAMPS, WRITTEN
from memguard.index.orders import Orders
from memguard.index.sizes import Sizes
from memguard.index.walks import Walks
from memguard.index.weighing import Weighing

__all__ = ["NOTHING", "PARK_AFTER", "RECHECK_MOST_PER_INSERT", "RECHECK_PER_INSERT",
           "RECHECK_PER_PASS", "RECHECK_PER_SAMPLE", "IndexObserver", "JobIndex", "Key"]

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


class JobIndex(Walks, Weighing, ForkRepair):
    """Creation order, recency, sizes and pins of the jobs of one store."""

    __slots__ = ()  # the slots are `IndexBase`'s, shared by every part

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
        live_indexes.add(self)

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
        orders = self.orders
        if orders.parked:
            size = orders.discard(key)
        else:  # `Orders.discard`, inlined for the commonest removal (nothing parked)
            size = orders.lru.pop(key, None)
            orders.aged.pop(key, None)
            orders.lru_churn += 1
            orders.aged_churn += 1
            finished = orders.finished
            if finished and finished.pop(key, _ABSENT) is not _ABSENT:
                orders.finished_churn += 1
            else:
                delivered = orders.delivered
                if delivered and delivered.pop(key, _ABSENT) is not _ABSENT:
                    orders.delivered_churn += 1
            bound = orders.bound
            if (orders.lru_churn > orders.lru_bound or orders.aged_churn > bound
                    or orders.finished_churn > bound or orders.delivered_churn > bound):
                orders.churned()
        if self.written:
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
        # The default predicate, inline as on the write path: every scan asks, per job.
        status = self.status
        if status is not None and type(job) is dict:
            try:
                return job.get(status[0]) in status[1]
            except TypeError:  # an unhashable status is no known status
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
