"""How a `JobIndex` weighs its jobs (see memguard.index.base): at their insert, or later
(`defer`: at the next catch-up, with one in 16 weighed at insert to keep a mean size), and
what happens when a job stored running is seen finished (`_turned_inactive`). Every method
runs with the index's lock held.
"""

from __future__ import annotations

from typing import Any

from memguard.index.activity import ABSENT as _ABSENT
from memguard.index.base import IndexBase, Key
from memguard.index.marks import STAMPS

_stamp = STAMPS.__next__


class Weighing(IndexBase):
    """Sizes now or at the next catch-up; jobs seen finished."""

    __slots__ = ()

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
