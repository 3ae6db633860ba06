"""The walks of a `JobIndex` (see memguard.index.base): the evictable jobs in each eviction
order (`candidates`, the age walk merged with jobs back from parking, idle expiry), the tiers
of the global emergency order, the `max_running` watch (`written_before`) and the round-robin
re-checks of jobs seen active. Every method runs with the index's lock held.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Optional

from memguard.index.activity import ABSENT as _ABSENT
from memguard.index.base import NOTHING, IndexBase, Key
from memguard.index.marks import ACTIVE, EVICTABLE, GONE, KEEP, PINNED


class Walks(IndexBase):
    """Eviction candidates, emergency tiers, the `max_running` watch, re-checks."""

    __slots__ = ()

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
