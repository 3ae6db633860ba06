"""`LocalHandle`: the control surface of a store held in this process, and raw access to it.

`LocalHandle` implements the `StoreHandle` protocol (`memguard.stores.protocol`) beside the
Redis handle (`memguard.redis.handle`). It owns the store's `JobIndex`, policy and eviction
plan (`memguard.eviction.plan`), runs that plan through the eviction runner
(`memguard.eviction.runner`), and reaches its manager only through `registry.StoreHost`.
The store classes that `@managed_store` builds (`memguard.stores.managed`) call it on every
write.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

from memguard._logging import logger
from memguard.eviction.events import Cause, CleanupReport, EvictionEvent
from memguard.eviction.plan import EvictionPlan, plan_for
from memguard.eviction.rules import Emergency, MaxAge, MaxBytes, MaxJobs, Pass, Pipeline, Rule
from memguard.eviction.runner import enforce_insert_bounds, enforce_soft_bounds, run_pass
from memguard.index.estimate import estimate_size
from memguard.index.job_index import (
    NOTHING,
    RECHECK_MOST_PER_INSERT,
    RECHECK_PER_INSERT,
    RECHECK_PER_PASS,
    RECHECK_PER_SAMPLE,
    JobIndex,
    Key,
)
from memguard.index.orders import Epoch
from memguard.policy.options import ActiveWhen, StorePolicy
from memguard.policy.policy import Policy
from memguard.stores.overrides import say_overrides
from memguard.stores.protocol import StoreHandle, StoreStats

if TYPE_CHECKING:
    from memguard.stores.registry import StoreHost


_MISSING: Any = object()
#: One victim in this many, evicted before its deferred weighing, is weighed to keep the
#: mean size that stands for the others' in `evicted_bytes`.
SAMPLE_EVERY = 16


class _Victim(NamedTuple):
    """An evicted job between its removal (under the lock) and its release (outside)."""

    key: Key
    job: Any
    cause: Cause
    size: Optional[int]


#: `_Victim`'s tuple built without the generated `__new__` (half the cost, on every eviction
#: of the insert cheap path).
_new_victim = tuple.__new__


class _Backend:
    """Raw access to a store's data, bypassing the managed methods (and so the index)."""

    needs_sync = False

    def __init__(self, store: Any, *, get: Callable[[Any, Key], Any],
                 delete: Callable[[Any, Key], None], keys: Callable[[Any], Any]) -> None:
        self._strong: Any = None
        try:
            self._ref: Callable[[], Any] = weakref.ref(store)
        except TypeError:  # plain dicts cannot be weakly referenced; they hold no handle either
            self._strong = store
            self._ref = self._held
        self._get, self._delete, self._keys = get, delete, keys

    def _held(self) -> Any:
        return self._strong

    def orphaned(self) -> bool:
        """True once nothing but this backend references the (plain dict) store: the app
        dropped it, so its manager may forget it. CPython reference counts; a weakly held
        store is never orphaned here (its finalizer unregisters it)."""
        return self._strong is not None and sys.getrefcount(self._strong) <= 2

    def get(self, key: Key) -> Any:
        store = self._ref()
        if store is None:
            raise KeyError(key)
        return self._get(store, key)

    def delete(self, key: Key) -> None:
        store = self._ref()
        if store is not None:
            self._delete(store, key)

    def pop(self, key: Key) -> Any:
        """Get and delete `key` (KeyError if absent): one call for the eviction path."""
        store = self._ref()
        if store is None:
            raise KeyError(key)
        job = self._get(store, key)
        self._delete(store, key)
        return job

    def list_keys(self) -> list[Key]:
        store = self._ref()
        return [] if store is None else list(self._keys(store))

    def count(self) -> int:
        """How many jobs the store holds (O(1) for a dict)."""
        store = self._ref()
        return 0 if store is None else len(store)


def _dict_get(store: Any, key: Key) -> Any:
    value = dict.get(store, key, _MISSING)  # dict.get never calls __missing__
    if value is _MISSING:
        raise KeyError(key)
    return value


class LocalHandle(StoreHandle):
    """The `StoreHandle` of a store held in this process: policy, touch, pins, stats, cleanup.

    `plan` is the store's eviction plan, rebuilt whenever a policy is applied or a rule
    added; passes run `plan.pipeline`, inserts over a bound run `plan.insert_rules`.
    """

    name: str
    policy: StorePolicy
    policy_source: Optional[Policy]
    index: JobIndex

    def __init__(self, name: str, *, manager: StoreHost, declared: Mapping[str, Any],
                 backend: _Backend) -> None:
        self.name = name
        self.manager = manager
        self._declared = dict(declared)
        self._backend = backend
        self.index = JobIndex(job_of=backend.get, active=lambda job: False, sizer=estimate_size)
        self._evictions: Counter[str] = Counter()
        self._count_evicted = 0  # evictions of the insert cheap path, not yet in the Counter
        self.policy = StorePolicy()
        self.plan = EvictionPlan()
        self.extra_rules: tuple[Rule, ...] = ()
        self.policy_source = None
        # The plan's insert bounds, copied for the write path (every write reads them).
        self._max_jobs: Optional[int] = None
        self._max_bytes: Optional[int] = None
        self._soft = False
        self._give_back = False  # a write-time soft cut evicted: reclaim after the insert
        self._unweighed_victims = 0  # victims evicted before they were weighed (a count)
        self.apply_policy(manager.policy)

    def __repr__(self) -> str:
        return f"<LocalHandle {self.name!r} jobs={len(self.index)}>"

    @property
    def evictions(self) -> Counter[str]:
        """Evictions by cause since the store was created."""
        with self.lock:
            if self._count_evicted:
                self._evictions["count"] += self._count_evicted
                self._count_evicted = 0
            return self._evictions

    @property
    def lock(self) -> threading.RLock:
        return self.index.lock

    @property
    def adopted(self) -> bool:
        """Whether this handle adopted a mapping that cannot report its writes (a plain dict
        given to `setup_job_store_cleanup`), whose keys each pass reconciles."""
        return self._backend.needs_sync

    def orphaned(self) -> bool:
        """Whether the adopted plain dict is referenced by nothing but this handle."""
        return self._backend.orphaned()

    # -- policy ----------------------------------------------------------------------------

    def effective_policy(self, policy: Policy,
                         declared: Optional[Mapping[str, Any]] = None) -> StorePolicy:
        """What `policy` makes of this store, given its decorator arguments (or `declared`,
        standing for them); may raise."""
        return policy.store_policy(self.name, self._declared if declared is None else declared)

    def apply_policy(self, policy: Policy, effective: Optional[StorePolicy] = None) -> None:
        """Switch to `policy` at once; the next write and the next pass use it."""
        store_policy = effective or self.effective_policy(policy)
        say_overrides(self.name, policy, self._declared)
        with self.lock:  # extra_rules is read here, under the lock add_rule takes too
            plan = plan_for(store_policy, policy.rules,
                            emergency_order=policy.memory.emergency_order,
                            extra_rules=self.extra_rules)
            self.policy_source = policy
            self.policy = store_policy
            self._use(plan)
            self.index.active = store_policy.active
            active = store_policy.active
            self.index.status = ((active.field, active.values)
                                 if type(active) is ActiveWhen else None)
            self.index.sizer = store_policy.size or estimate_size
            self._defer_weighing()

    def _use(self, plan: EvictionPlan) -> None:
        """Enforce `plan` from now on (lock held)."""
        self.plan = plan
        self.index.track_deliveries(plan.tracks_deliveries)
        index = self.index
        if plan.max_running is None:
            index.written.clear()
        elif not index.watches_written:  # watched from now on: a job's clock starts now
            now = self.manager.clock()
            index.written = dict.fromkeys(index.created, now)
        index.watches_written = plan.max_running is not None
        # Soft bounds are never enforced on insert (plan.insert_rules is empty then).
        self._soft = plan.soft and bool(plan.soft_rules)
        self._max_jobs = None if plan.soft else plan.max_jobs
        self._max_bytes = None if plan.soft else plan.max_bytes
        # A pass can be skipped in O(1) when its rules are only these (see `nothing_due`).
        self._checkable = not plan.soft and all(
            type(rule) in (MaxAge, MaxJobs, MaxBytes, Emergency) for rule in plan.pipeline.rules)
        self._due = float("-inf")  # the first pass runs, and notes when the next is due
        # The plan's cheap path (`fast_count`): an insert over the count bound evicts the
        # least recent job itself when it is plainly evictable (`_evict_front`).
        self._fast_over = (plan.max_jobs + 1 if plan.fast_count and plan.max_jobs is not None
                           else -1)
        self._defer_weighing()

    def _defer_weighing(self) -> None:
        """Weigh with the default estimate at the next catch-up rather than at insert when
        nothing on the plan's insert path needs a size (no byte bound, no `largest` order,
        hard bounds: a soft store's write under pressure cuts it back by sizes at once).
        A store's own `size=` function is called at each insert, as documented."""
        plan = self.plan
        self.index.defer(self.index.sizer is estimate_size and plan.max_bytes is None
                         and not plan.soft  # its cuts under pressure go by sizes at once
                         and "largest" not in (plan.order, plan.emergency_order))

    @property
    def pipeline(self) -> Pipeline:
        """The rules of a pass (`plan.pipeline`). Assigning one keeps the plan's bounds and
        runs the given rules at each pass instead (until the next policy change)."""
        return self.plan.pipeline

    @pipeline.setter
    def pipeline(self, pipeline: Pipeline) -> None:
        with self.lock:
            self._use(self.plan.with_pipeline(pipeline))

    def declare(self, **rules: Any) -> None:
        """Add decorator-level rules (used by `setup_job_store_cleanup`) and re-apply.

        Validated first: on a bad value nothing changes (raises ValueError naming it).
        """
        declared = {**self._declared, **{k: v for k, v in rules.items() if v is not None}}
        policy = self.manager.policy
        effective = self.effective_policy(policy, declared)
        self._declared = declared
        self.apply_policy(policy, effective)

    def add_rule(self, rule: Rule) -> None:
        """Run `rule` (a rule, a `|` composition or a plain callable) in every pass of this
        store, after the policy's rules and before the emergency rule; kept across reloads."""
        with self.lock:
            self.extra_rules += rule.rules if isinstance(rule, Pipeline) else (rule,)
            source = self.policy_source or self.manager.policy
            self.apply_policy(source, self.policy)

    # -- public operations ------------------------------------------------------------------

    def touch(self, key: Key) -> None:
        """Mark `key` as just used. O(1); an unknown key is ignored.

        In an adopted plain dict, a key not indexed yet means writes the index could not
        see: every such key is indexed first (O(n), in the dict's order), so the touched job
        goes after its untracked siblings, not ahead of them.
        """
        if key not in self.index:
            if not self._backend.needs_sync:
                return  # unknown to a managed store: nothing to touch
            self.reconcile()
        self.index.touch(key)

    def pin(self, key: Key) -> None:
        """Keep `key` from eviction until as many `unpin` calls; pins nest. A key not stored
        yet may be pinned (the job it will hold is then safe from its first write); only
        pins of stored jobs count in `stats().pinned`."""
        with self.lock:
            self.index.pin(key)

    def unpin(self, key: Key) -> None:
        with self.lock:
            self.index.unpin(key)

    @contextlib.contextmanager
    def in_use(self, key: Key) -> Iterator[None]:
        """Pin `key` for the duration of a `with` block."""
        self.pin(key)
        try:
            yield
        finally:
            self.unpin(key)

    def evict(self, key: Key) -> Optional[EvictionEvent]:
        """Evict `key` now (cause `explicit`), active or not; None if it is not stored."""
        with self.lock:
            victim = self.evict_locked(key, Cause.EXPLICIT)
        events = self.finish_evictions([victim] if victim else [])
        return events[0] if events else None

    def cleanup(self, *, now: Optional[float] = None) -> CleanupReport:
        """Run one periodic pass of this store's pipeline and report it (soft bounds are
        enforced when the manager says memory is at or above `warning`)."""
        start = self.manager.clock() if now is None else now
        pressure = self.manager.under_pressure()
        events = self.run_pass(Pass(now=start, order=self.plan.order, pressure=pressure))
        return CleanupReport.from_events("periodic", events, started_at=start)

    def run_pass(self, ctx: Pass) -> list[EvictionEvent]:
        """One pass of the plan's pipeline (an emergency when `ctx` carries a budget).

        A periodic pass that can evict nothing and has no upkeep to do returns at once, in
        O(1) (`nothing_due`); after a pass that ran, the earliest time the age bound can evict is
        noted (`_note_due`)."""
        if ctx.budget is None and self.nothing_due(ctx.now):
            if self.index.deferred:  # the pass's one upkeep left: weigh (never a byte
                with self.lock:  # bound here: a plan with one weighs at insert)
                    self.index.weigh_deferred()
            return []
        events = run_pass(self.plan.pipeline, self, ctx)
        self._note_due(ctx.now)
        return events

    def nothing_due(self, now: float) -> bool:
        """Whether a periodic pass at `now` would evict nothing and do no upkeep but weigh:
        only built-in bounds in the pipeline (age, count, bytes, emergency: `_checkable`),
        the age bound not due (`_due`, a lower bound on the oldest job's expiry), the store
        within its count and byte bounds, nothing to re-check, reconcile or take back from
        parking. O(1): a few truth tests, no lock (a racing write only makes the next pass
        the one that sees it)."""
        index = self.index
        return (self._checkable and now < self._due
                and not index.activity.rotation and not index.returned and not index.resync
                and not self._backend.needs_sync
                and (self._max_jobs is None or len(index.created) <= self._max_jobs)
                and (self._max_bytes is None or index.total_bytes <= self._max_bytes))

    def _note_due(self, now: float) -> None:
        """After a pass at `now`: the earliest time its age bound can evict (the oldest job
        in the age order, or, in an empty store, a job created now). Writes only add
        younger jobs and removals only make the oldest younger, so this stays a lower
        bound until the next pass; a job back from parking sits in `index.returned`, which
        `nothing_due` checks."""
        max_age = self.plan.max_age
        if not self._checkable:
            return
        if max_age is None:
            self._due = float("inf")
            return
        with self.lock:
            created = self.index.created
            oldest = next(iter(self.index.orders.aged), _MISSING)
            when = created.get(oldest, now) if oldest is not _MISSING else now
            self._due = min(when, now) + max_age

    def soft_expired(self, now: float) -> Iterator[tuple[Key, Cause]]:
        """The jobs of this store past a soft bound at `now` (`bounds = "soft"`), as
        `(key, cause)`, oldest expiry first within each bound (`EvictionPlan.soft_expired`
        says the order); nothing when the bounds are hard.

        The source of the middle tier of the global emergency order (DESIGN section 10).
        The caller holds `lock` for the whole iteration and evicts each key it is given
        (`evict_locked(key, cause)`) before asking for the next, as with
        `JobIndex.candidates`; stopping early is fine. Active jobs are never yielded.
        """
        if not self.plan.soft:
            return iter(())
        self.index.drain_reads()
        return self.plan.soft_expired(self.index, now)

    def stats(self) -> StoreStats:
        """Jobs, active jobs, pins, weighed bytes and evictions by cause, in O(1).

        `active` counts the jobs memguard saw active (or pinned) at its last look at each:
        at its write, in a scan, or in the round-robin re-checks of inserts and passes. A
        job whose status changed in place is counted by what it was until it is looked at
        again (pass granularity). A plain dict's keys are caught up with at each pass, so
        its `jobs` is the dict's own length and the rest is as of the last pass.
        """
        with self.lock:
            index = self.index
            index.weigh_deferred()
            jobs = self._backend.count() if self._backend.needs_sync else len(index)
            return StoreStats(
                name=self.name, jobs=jobs, active=len(index.known_active),
                pinned=index.pinned_jobs, bytes=index.total_bytes,
                unweighed=len(index.unweighed), evictions=dict(self.evictions),
            )

    def recency(self) -> list[Key]:
        """Job keys, least recently used first."""
        return self.index.recency()

    # -- internals: called by the store classes and the pipeline ------------------------------

    def switch_backend(self, backend: _Backend) -> None:
        """Read and delete through `backend` from now on (a reassigned `mapping=` dict)."""
        self._backend = backend
        self.index.job_of = backend.get

    def stored_locked(self, key: Key, job: Any) -> list[_Victim]:
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
        victims: list[_Victim] = []
        index.writing = key  # counts as active while its own insert enforces the bound
        try:
            enforce_insert_bounds(self.plan, self, now, victims)
        finally:
            index.writing = NOTHING
        return victims

    def _evict_front(self, key: Key) -> Optional[_Victim]:
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
        try:
            job = backend.get(front)
            status = index.status
            if status is not None and type(job) is dict:
                if job.get(status[0]) in status[1]:
                    return None
            elif index.active(job):
                return None
        except Exception:  # gone behind our back, or a predicate that raises: the runner's
            return None
        backend.delete(front)
        self._count_evicted += 1  # an int: a Counter's `+= 1` costs several times more
        return _new_victim(_Victim, (front, job, Cause.COUNT, index.remove(front)))

    def _pressed(self) -> bool:
        """Whether the manager says memory is under pressure (level at or above warning)."""
        return self.manager.under_pressure(fresh=True)

    def _soft_cut(self, key: Key, now: float) -> list[_Victim]:
        """A write under memory pressure into a soft-bounded store: evict what is past its
        soft bounds now (the job written stays)."""
        victims: list[_Victim] = []
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

    def follow_locked(self, cls: type, key: Key, value: Any) -> list[_Victim]:
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
        victims: list[_Victim] = []
        for stored in present:
            try:
                job = self._backend.get(stored)
            except KeyError:
                continue
            if stored not in known or job is value:
                victims += self.stored_locked(stored, job)
        return victims

    def evict_locked(self, key: Key, cause: Cause) -> Optional[_Victim]:
        """Take `key` out of the store and the index, and count it by cause (lock held)."""
        try:
            job = self._backend.pop(key)
        except KeyError:
            self.index.remove(key)
            return None
        self._evictions[cause._value_] += 1  # `_value_`: a plain attribute, not the descriptor
        return _Victim(key, job, cause, self.index.remove(key))

    def finish_evictions(self, victims: list[_Victim]) -> list[EvictionEvent]:
        """Release the victims' big fields and tell the listeners; call without the lock."""
        victims = [self._weighed(victim) for victim in victims]
        events = [EvictionEvent(self.name, victim.key, victim.cause, victim.size)
                  for victim in self._released(victims)]
        if events:
            self.manager.notify_evictions(events)
        return events

    def _weighed(self, victim: _Victim) -> _Victim:
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

    def _guess_size(self, victim: _Victim) -> int:
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

    def finish_insert(self, victims: list[_Victim]) -> None:
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

    def _released(self, victims: list[_Victim]) -> list[_Victim]:
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
            victims: list[_Victim] = []
            for key in [key for key in self.index.created if key not in after]:
                self.index.remove(key)
            for key, value in after.items():
                if key not in self.index or before.get(key, _MISSING) is not value:
                    victims += self.stored_locked(key, value)
        if victims:
            self.finish_insert(victims)

    def prepare_pass(self, ctx: Optional[Pass] = None) -> None:
        """Before a pass (lock held): catch up with plain dicts, look again at the
        known-active jobs, round robin, until RECHECK_PER_PASS are found still running
        (finished ones, weighed once in their life, do not count; an emergency looks at
        all of them). A store whose index was repaired after a fork (`JobIndex.resync`)
        catches up with its keys once."""
        if self._backend.needs_sync or self.index.resync:
            self.index.resync = False
            self.reconcile()
        emergency = ctx is not None and ctx.budget is not None
        self.index.weigh_deferred()
        self.index.recheck(None if emergency else RECHECK_PER_PASS)

    def notice_finished(self) -> None:
        """Look again at a batch of the jobs seen active (`RECHECK_PER_SAMPLE` still
        running at most, any number found finished), so the index learns soon that a job
        stored running was completed in place: its finish is dated then, and a read after
        it counts as its delivery. The reads since the last drain are drained first (a
        delivery is dated at its drain: this bounds how late). The monitor calls this at
        each sample; without reads or known active jobs it costs two truth tests."""
        index = self.index
        if index.activity.rotation or index.reads or index.deferred:
            with self.lock:
                index.weigh_deferred()  # the monitor's byte totals are a sample late at most
                index.drain_reads()  # deliveries dated within a sample of the read
                index.recheck(RECHECK_PER_SAMPLE)

    def reconcile(self) -> None:
        """Make the index match the store's keys after writes it could not see: plain dicts,
        `dict.__init__`, a user's own `update`. O(n); new keys count as created now."""
        with self.lock:
            present = self._backend.list_keys()
            for key in set(self.index.created).difference(present):
                self.index.remove(key)
            for key in present:
                if key not in self.index:
                    self._adopt(key)

    def _adopt(self, key: Key) -> None:
        with self.lock:
            try:
                job = self._backend.get(key)
            except KeyError:  # gone again meanwhile (a plain dict written by another thread)
                return
            if key not in self.index:
                self.index.add(key, job, self.manager.clock())


#: Store classes already warned about writes that did not land under their key.
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
