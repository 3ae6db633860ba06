"""`LocalHandle`: the control surface of a store held in this process.

`LocalHandle` implements the `StoreHandle` protocol (`memguard.stores.protocol`) beside the
Redis handle (`memguard.redis.handle`). It owns the store's `JobIndex`, policy and eviction
plan (`memguard.eviction.plan`), runs that plan through the eviction runner
(`memguard.eviction.runner`), and reaches its manager only through `registry.StoreHost`.
The store classes that `@managed_store` builds (`memguard.stores.managed`) call it on every
write.

The class comes in parts (memguard.stores.handle_state): this module has the policy and plan,
the public operations and stats; `InsertPath` (memguard.stores.inserts) the write path and
its evictions; `PassPath` (memguard.stores.passes) the periodic pass and its catch-ups; raw
access to the store's data is `Backend` (memguard.stores.backend).
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Optional

from memguard.eviction.events import Cause, EvictionEvent
from memguard.eviction.plan import EvictionPlan, plan_for
from memguard.eviction.rules import Emergency, MaxAge, MaxBytes, MaxJobs, Pipeline, Rule
from memguard.index.estimate import estimate_size
from memguard.index.job_index import JobIndex, Key
from memguard.policy.options import ActiveWhen, StorePolicy
from memguard.policy.policy import Policy
from memguard.stores.backend import Backend
from memguard.stores.inserts import InsertPath
from memguard.stores.overrides import say_overrides
from memguard.stores.passes import PassPath
from memguard.stores.protocol import StoreHandle, StoreStats

if TYPE_CHECKING:
    from memguard.stores.registry import StoreHost


class LocalHandle(InsertPath, PassPath, StoreHandle):
    """The `StoreHandle` of a store held in this process: policy, touch, pins, stats, cleanup.

    `plan` is the store's eviction plan, rebuilt whenever a policy is applied or a rule
    added; passes run `plan.pipeline`, inserts over a bound run `plan.insert_rules`.
    """

    name: str
    policy: StorePolicy
    policy_source: Optional[Policy]
    index: JobIndex

    def __init__(self, name: str, *, manager: StoreHost, declared: Mapping[str, Any],
                 backend: Backend) -> None:
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

    def switch_backend(self, backend: Backend) -> None:
        """Read and delete through `backend` from now on (a reassigned `mapping=` dict)."""
        self._backend = backend
        self.index.job_of = backend.get
