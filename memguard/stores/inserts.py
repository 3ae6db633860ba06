"""The write path of a `LocalHandle` (see memguard.stores.handle_state): index a write and
enforce the insert-time bounds under the store's lock (`stored_locked`: the plan's cheap path
evicts the least recent job itself, `_evict_front`; the runner does the rest), then release
the victims and count what they freed outside it (`finish_insert`). Also the writes the store
could not report (`follow_locked`, `absorb`) and an eviction by key (`evict_locked`).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, Optional

from memguard._logging import logger
from memguard.eviction.events import Cause, EvictionEvent
from memguard.eviction.runner import enforce_insert_bounds, enforce_soft_bounds
from memguard.index.job_index import (
    NOTHING,
    RECHECK_MOST_PER_INSERT,
    RECHECK_PER_INSERT,
    Key,
)
from memguard.index.marks import Epoch
from memguard.stores.backend import dict_get
from memguard.stores.handle_state import HandleState, Victim

_MISSING: Any = object()
#: One victim in this many, evicted before its deferred weighing, is weighed to keep the
#: mean size that stands for the others' in `evicted_bytes`.
SAMPLE_EVERY = 16


#: `Victim`'s tuple built without the generated `__new__` (half the cost, on every eviction
#: of the insert cheap path).
_new_victim = tuple.__new__


class InsertPath(HandleState):
    """Index a write, enforce the insert-time bounds, release the victims."""

    def stored_locked(self, key: Key, job: Any) -> list[Victim]:
        """Index a write and enforce the insert-time bounds; returns what they evicted.

        The job just written is never the victim: when every other job is active the store
        stays over its bound until one finishes, rather than drop what was just stored.
        """
        now = self.manager.clock()
        index = self.index
        index.add(key, job, now)
        if self._soft and self._pressed():
            return self._soft_cut(key, now)
        if not (  # over a bound of the plan? (inline: every write asks)
                (self._max_jobs is not None and len(index.created) > self._max_jobs)
                or (self._max_bytes is not None and index.total_bytes > self._max_bytes)):
            return []
        if index.known_active:  # finished jobs become victims again, in time
            index.recheck(RECHECK_PER_INSERT, most=RECHECK_MOST_PER_INSERT)
        if len(index.created) == self._fast_over and index.observer is None:
            victim = self._evict_front(key)
            if victim is not None:
                return [victim]
        victims: list[Victim] = []
        index.writing = key  # counts as active while its own insert enforces the bound
        try:
            enforce_insert_bounds(self.plan, self, now, victims)
        finally:
            index.writing = NOTHING
        return victims

    def _evict_front(self, key: Key) -> Optional[Victim]:
        """The cheap path of a `fast_count` plan one job over its bound (lock held): evict
        the least recent job if it is plainly evictable (not the job `key` being written, no
        read pending, not pinned, known active or failed, and its predicate says finished);
        None otherwise, and the runner takes over. The same victim as `MaxJobs` in `lru`
        order, in a handful of calls."""
        index = self.index
        front = next(iter(index.orders.lru), NOTHING)
        if (front is NOTHING or front == key or type(front) is Epoch or front in index.reads
                or front in index.pins or front in index.unweighed or front in index.failed):
            return None
        backend = self._backend
        store = backend._ref()
        try:
            if backend._get is dict_get:  # a dict store: its own C methods, no Python call
                job = dict.get(store, front, _MISSING)
                if job is _MISSING:
                    return None
            else:
                job = backend.get(front)
            status = index.status
            if status is not None and type(job) is dict:
                if job.get(status[0]) in status[1]:
                    return None
            elif index.active(job):
                return None
        except Exception:  # gone behind our back, or a predicate that raises: the runner's
            return None
        if store is not None:  # `Backend.delete`, inline
            backend._delete(store, front)
        self._count_evicted += 1  # an int: a Counter's `+= 1` costs several times more
        return _new_victim(Victim, (front, job, Cause.COUNT, index.remove(front)))

    def _pressed(self) -> bool:
        """Whether the manager says memory is under pressure (level at or above warning)."""
        return self.manager.under_pressure(fresh=True)

    def _soft_cut(self, key: Key, now: float) -> list[Victim]:
        """A write under memory pressure into a soft-bounded store: evict what is past its
        soft bounds now (the job written stays)."""
        victims: list[Victim] = []
        index = self.index
        if index.known_active:
            index.recheck(RECHECK_PER_INSERT, most=RECHECK_MOST_PER_INSERT)
        index.writing = key
        try:
            enforce_soft_bounds(self.plan, self, now, victims)
        finally:
            index.writing = NOTHING
        if victims:
            self._give_back = True
        return victims

    def follow_locked(self, cls: type, key: Key, value: Any) -> list[Victim]:
        """After a write that the store class did not keep under `key` (it normalised the
        key, or refused the write): make the index match the store's keys, O(n). New keys
        are stored (bounds enforced), vanished ones forgotten, a job replaced under another
        key re-weighed. Warned about once per class."""
        if cls.__qualname__ not in _FOLLOWED:
            _FOLLOWED.add(cls.__qualname__)
            logger.warning(
                "memguard: %s.__setitem__ did not store job %r under that key (it changes "
                "keys or refuses writes); store %s follows what it really stored by comparing "
                "keys, O(jobs) per such write", cls.__qualname__, key, self.name)
        present = self._backend.list_keys()
        known = self.index.created
        still = set(present)
        for gone in [k for k in known if k not in still]:
            self.index.remove(gone)
        victims: list[Victim] = []
        for stored in present:
            try:
                job = self._backend.get(stored)
            except KeyError:
                continue
            if stored not in known or job is value:
                victims += self.stored_locked(stored, job)
        return victims

    def evict_locked(self, key: Key, cause: Cause) -> Optional[Victim]:
        """Take `key` out of the store and the index, and count it by cause (lock held)."""
        try:
            job = self._backend.pop(key)
        except KeyError:
            self.index.remove(key)
            return None
        self._evictions[cause._value_] += 1  # `_value_`: a plain attribute, not the descriptor
        return Victim(key, job, cause, self.index.remove(key))

    def finish_evictions(self, victims: list[Victim]) -> list[EvictionEvent]:
        """Release the victims' big fields and tell the listeners; call without the lock."""
        victims = [victim if victim.size is not None else self._weighed(victim)
                   for victim in victims]
        events = [EvictionEvent(self.name, victim.key, victim.cause, victim.size)
                  for victim in self._released(victims)]
        if events:
            self.manager.notify_evictions(events)
        return events

    def _weighed(self, victim: Victim) -> Victim:
        """`victim` with its size, weighed now if its weighing was deferred (a finished job
        evicted before the next catch-up); an active job's size stays unknown."""
        if victim.size is not None or not self.index.defer_weighing:
            return victim
        try:
            if self.index.active(victim.job):
                return victim
            return victim._replace(size=max(0, int(self.index.sizer(victim.job))))
        except Exception:  # the predicate or size function raised: size unknown, as before
            return victim

    def _guess_size(self, victim: Victim) -> int:
        """What a victim evicted before it was weighed freed, for `evicted_bytes` (the cue
        to give memory back): the index's mean weighed size, kept up by weighing one such
        victim in SAMPLE_EVERY (and any while no mean is known yet), blended in by eighths:
        this weighs the sample. Outside the lock: a race only blends one sample less."""
        index = self.index
        weighed = self._weighed(victim).size
        if weighed is None:
            return index.mean_size
        mean = index.mean_size
        index.mean_size = weighed if not mean else (7 * mean + weighed) // 8
        return weighed

    def finish_insert(self, victims: list[Victim]) -> None:
        """`finish_evictions` for an insert, which reports nothing: events (about 1 us each)
        are built only when an `on_evict` callback listens; the freed bytes count always."""
        if self.manager.has_listeners:
            self.finish_evictions(victims)
        else:
            freed = 0
            release = self.plan.release
            for victim in victims:  # a loop, not sum(genexpr): a hot path
                size = victim.size
                if size is not None:
                    freed += size
                else:  # weighing deferred: the mean size, sampled (`_guess_size`)
                    self._unweighed_victims += 1
                    mean = self.index.mean_size
                    freed += (mean if mean and self._unweighed_victims % SAMPLE_EVERY
                              else self._guess_size(victim))
                job = victim.job
                if type(job) is dict:  # `_release`, inline for the commonest job
                    for field in release:
                        if field in job:
                            job[field] = None
                elif release:
                    _release(job, release, victim.key)
            self.manager.count_freed(freed)
        if self._give_back:
            # A write under pressure cut a soft store back: hand the memory to the system
            # now (the allocator keeps freed results otherwise until the monitor's next
            # reclaim, and usage would sit above `warning` until then). Rare: one per cut.
            self._give_back = False
            reclaim = getattr(self.manager, "reclaim", None)
            if reclaim is not None:
                try:
                    reclaim(full=False)
                except Exception:  # giving back is best effort; the monitor's will follow
                    logger.exception("memguard: reclaim after a soft cut of %s failed",
                                     self.name)

    def _released(self, victims: list[Victim]) -> list[Victim]:
        """`victims`, each with the policy's release fields set to None."""
        release = self.plan.release
        if release:
            for victim in victims:
                _release(victim.job, release, victim.key)
        return victims

    def absorb(self, before: Mapping[Key, Any], after: Mapping[Key, Any]) -> None:
        """Index what a write the store could not see did, going from `before` to `after`
        (shallow copies): new or replaced jobs are stored (bounds enforced, re-weighed),
        vanished ones removed. Evictions are finished outside the lock."""
        with self.lock:
            victims: list[Victim] = []
            for key in [key for key in self.index.created if key not in after]:
                self.index.remove(key)
            for key, value in after.items():
                if key not in self.index or before.get(key, _MISSING) is not value:
                    victims += self.stored_locked(key, value)
        if victims:
            self.finish_insert(victims)


_FOLLOWED: set[str] = set()


def _release(job: Any, fields: tuple[str, ...], key: Key) -> None:
    """Set each release field to None (kept present) so its memory goes even if job is held."""
    for field in fields:
        try:
            if type(job) is dict or isinstance(job, MutableMapping):
                if field in job:
                    job[field] = None
            elif hasattr(job, field):
                setattr(job, field, None)
        except Exception:
            logger.warning("memguard: could not release %r of evicted job %r", field, key,
                           exc_info=True)
