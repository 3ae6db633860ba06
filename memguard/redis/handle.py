"""`RedisHandle`: the `StoreHandle` of a Redis store, a sibling of the in-process handle.

It implements the `StoreHandle` protocol (`memguard.stores.protocol`) on its own, sharing
nothing with `memguard.stores.handle.LocalHandle` but the protocol and the store's eviction
plan (`memguard.eviction.plan`), whose bounds, ages and orders are its scripts' parameters.
The manager, the monitor and the HTTP surfaces treat it like any store handle; its `index`
has `len()` and `total_bytes` (the figures of the last pass or stats, never a network call)
and the read set `@touches` fills. What differs:

- times are the Redis server's (`TIME`), not the manager's injected clock;
- a pass with an emergency budget (the worker's memory) evicts nothing: worker RSS does not
  hold Redis jobs. Redis' own memory drives their emergency rule, checked at each pass;
- pins live in Redis with a lease, renewed by a daemon thread while this process holds them.

The handle composes the parts that read alone: the pins and their leases
(`memguard.redis.pins`), the stats and the memory of an unreachable Redis
(`memguard.redis.figures`), the Redis emergency rule (`memguard.redis.emergency`); the
store's operations are its `RedisCore`'s (`memguard.redis._core`).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Optional

from memguard._logging import logger
from memguard.errors import PolicyError, RedisStoreError, StoreDefinitionError
from memguard.eviction.events import Cause, CleanupReport, EvictionEvent
from memguard.eviction.plan import EvictionPlan, plan_for
from memguard.eviction.rules import Pass, Rule
from memguard.eviction.runner import log_abandoned
from memguard.monitor.thread import THREAD_NAME as MONITOR_THREAD
from memguard.policy.options import StorePolicy
from memguard.policy.policy import Policy
from memguard.redis._core import RedisCore
from memguard.redis._fields import Victim
from memguard.redis.emergency import redis_emergency
from memguard.redis.figures import RedisFigures
from memguard.redis.index import RedisIndex, RedisStoreStats
from memguard.redis.offload import PENDING, Offloaded
from memguard.redis.pins import PinLeases
from memguard.stores.overrides import say_overrides
from memguard.stores.protocol import StoreHandle

if TYPE_CHECKING:
    from memguard.stores.building import _Spec
    from memguard.stores.registry import StoreHost


#: Seconds `stats()` and a pass started by the manager (the monitor's thread) wait for Redis:
#: a frozen Redis answers nothing until the socket timeout (5 s), and the monitor samples
#: memory on the thread that runs the passes. Past the bound the call goes on in the
#: background (a pass still reports its evictions to listeners and counts when it ends).
WAIT_BOUND = 1.0

#: Every Redis store handle of this process: a full Redis frees the finished jobs of all
#: of them that live on it (`RedisHandle._on_full`).
_live_handles: weakref.WeakSet[RedisHandle] = weakref.WeakSet()



class RedisHandle(StoreHandle):
    """The control surface of one `RedisStore` instance (see the module docstring)."""

    name: str
    policy: StorePolicy
    policy_source: Optional[Policy]
    index: RedisIndex
    #: The Redis memory budget of the emergency rule, set here in code; None = the policy's
    #: `[redis] limit`, else the server's `maxmemory` (0: no budget, no emergency).
    redis_limit: Optional[int] = None
    policy_redis_limit: Optional[int] = None

    def __init__(self, name: str, *, manager: StoreHost, declared: Mapping[str, Any],
                 core: RedisCore) -> None:
        self.name = name
        self.manager = manager
        self._declared = dict(declared)
        self.core = core
        self.index = RedisIndex()
        self.evictions: Counter[str] = Counter()
        self.policy = StorePolicy()
        self.plan = EvictionPlan()
        self.policy_source = None
        self.leases = PinLeases(name, core, self.index)
        self.figures = RedisFigures(name, core, self.index, self.evictions,
                                    limit=lambda: self.redis_limit or self.policy_redis_limit)
        core.on_evicted = self._evicted
        core.before_call = self._flush_reads
        core.on_full = self._on_full
        _live_handles.add(self)
        self._freeing = threading.Lock()
        self.wait_bound = WAIT_BOUND
        self._passes = Offloaded(f"memguard-redis-pass-{name}")
        self.apply_policy(manager.policy)

    @classmethod
    def create(cls, spec: _Spec, core: RedisCore) -> RedisHandle:
        if spec.manager is not None:
            manager = spec.manager
        else:
            from memguard.manager import manager
        try:
            return cls(spec.name, manager=manager, declared=spec.declared, core=core)
        except (ValueError, TypeError) as error:
            raise StoreDefinitionError(f"store {spec.name!r}: {error}") from None

    def __repr__(self) -> str:
        return f"<RedisHandle {self.name!r} at {self.core.link.where} jobs={self.index.jobs}>"

    @property
    def lock(self) -> threading.RLock:
        return self.index.lock

    @property
    def pin_lease(self) -> float:
        """Seconds a pin holds without renewal (renewed every third of it while held)."""
        return self.leases.lease

    @pin_lease.setter
    def pin_lease(self, seconds: float) -> None:
        self.leases.lease = seconds

    # -- policy ----------------------------------------------------------------------------

    def effective_policy(self, policy: Policy,
                         declared: Optional[Mapping[str, Any]] = None) -> StorePolicy:
        """What `policy` makes of this store, given its decorator arguments (or `declared`,
        standing for them); may raise.

        `bounds = "soft"` is refused with a PolicyError for now: the Redis scripts enforce
        bounds as deadlines, and soft bounds need the monitor's pressure level inside them
        (docs/redis.md)."""
        declared = self._declared if declared is None else declared
        effective = policy.store_policy(self.name, declared)
        if effective.bounds == "soft":
            origin = policy.explain(self.name, declared)["bounds"][1]
            raise PolicyError(
                'bounds = "soft" is not supported on Redis stores yet (set by '
                f'{origin}); expected bounds = "hard" for Redis store {self.name!r}, or '
                "keep soft bounds for in-process stores only ([stores.NAME] sections)",
                source=policy.source, key=f"stores.{self.name}.bounds")
        return effective

    def apply_policy(self, policy: Policy, effective: Optional[StorePolicy] = None) -> None:
        """Switch to `policy` at once: its plan gives the parameters of every script from
        the next call on (the insert bounds included, in every process that applied it)."""
        store_policy = effective or self.effective_policy(policy)
        say_overrides(self.name, policy, self._declared)
        plan = plan_for(store_policy, policy.rules,
                        emergency_order=policy.memory.emergency_order)
        with self.lock:
            self.policy_source = policy
            self.policy = store_policy
            self.plan = plan
            self.policy_redis_limit = policy.redis.get("limit")
            self.core.policy = store_policy
            self.core.plan = plan

    def declare(self, **rules: Any) -> None:
        """Add decorator-level options (used by `setup_job_store_cleanup`) and re-apply.

        Validated first: on a bad value nothing changes (raises ValueError naming it).
        """
        declared = {**self._declared, **{k: v for k, v in rules.items() if v is not None}}
        policy = self.manager.policy
        effective = self.effective_policy(policy, declared)
        self._declared = declared
        self.apply_policy(policy, effective)

    def add_rule(self, rule: Rule) -> None:
        """Refused: a Redis store's rules run as scripts inside Redis, for every worker."""
        raise TypeError(f"store {self.name!r} lives in Redis, where its rules run as scripts; "
                        "a Python rule cannot be added to it")

    # -- public operations ------------------------------------------------------------------

    def touch(self, key: Any) -> None:
        """Mark `key` as just used (one round trip); an unknown key is ignored."""
        self.core.touch([key])

    def pin(self, key: Any) -> None:
        """Keep `key` from eviction, by every worker, until as many `unpin` calls; the pin
        is a lease in Redis renewed while this process holds it."""
        self.leases.pin(key)

    def unpin(self, key: Any) -> None:
        self.leases.unpin(key)

    @contextlib.contextmanager
    def in_use(self, key: Any) -> Iterator[None]:
        """Pin `key` for the duration of a `with` block."""
        self.pin(key)
        try:
            yield
        finally:
            self.unpin(key)

    def evict(self, key: Any) -> Optional[EvictionEvent]:
        """Evict `key` now (cause `explicit`), active or not; None if it is not stored."""
        size = self.core.delete(key, operation="eviction")
        if size is None:
            return None
        events = self._finish_evictions([(key, size, Cause.EXPLICIT.value)])
        return events[0]

    def cleanup(self, *, now: Optional[float] = None) -> CleanupReport:
        """Run one periodic pass of this store's plan inside Redis and report it. `now`
        (the manager's clock by default) dates the report only: Redis stores age their
        jobs by the server's time."""
        start = self.manager.clock() if now is None else now
        events = self._pass_now()
        return CleanupReport.from_events("periodic", events, started_at=start)

    def run_pass(self, ctx: Pass) -> list[EvictionEvent]:
        """The manager's pass over this store (see `_pass_now`). On the monitor's thread,
        which also samples memory, it is waited for at most `wait_bound` seconds, and a
        quarter of it while Redis is known unreachable: past that it
        goes on in the background and this returns no events (its evictions still reach
        the listeners and counts when it ends). A worker's emergency evicts nothing here."""
        if ctx.budget is not None:
            return []
        if threading.current_thread().name != MONITOR_THREAD:
            return self._pass_now()  # a cleanup asked for (run_cleanup, SIGUSR1, /cleanup)
        # known unreachable: a refused connection still fails here at once; a frozen one
        # is not waited for
        wait = self.wait_bound / 4 if self.figures.known_unreachable() else self.wait_bound
        outcome = self._passes.call(self._pass_now, wait)
        return [] if outcome is PENDING else list(outcome)

    def _pass_now(self) -> list[EvictionEvent]:
        """One pass of the store's rules, run inside Redis; raises RedisStoreError when Redis
        fails (the manager isolates it, and `stats()` reports the store unreachable).

        A pass runs in batches (at most PASS_BATCH victims per script call): when a later
        batch fails, what the earlier ones evicted is still reported (listeners, counts,
        the returned events) and the failure is logged instead of raised.

        The worker's emergency (a pass with a budget) never gets here: Redis jobs do not
        use the worker's memory.
        """
        plan = self.plan
        found: list[Victim] = []
        try:
            self.index.jobs, self.index.total_bytes = self.core.run_pass(plan, found)
            if plan.emergency:
                before = len(found)
                self._redis_emergency(found=found)
                if len(found) > before:
                    self.refresh()
        except RedisStoreError as error:
            self.figures.last_error = str(error)
            if not found:
                raise
            logger.warning("memguard: pass of Redis store %s failed after evicting %d "
                           "job(s), reported: %s", self.name, len(found), error)
        return self._finish_evictions(found)

    def _on_full(self) -> int:
        """Redis refused a write as full: run the emergency rule now, without waiting for
        a pass, down to its target share of the server's `maxmemory`: this store's first,
        then the other Redis stores of this process on the same server while Redis is
        still past it. How many jobs went."""
        peers = [self] + [other for other in list(_live_handles)
                          if other is not self and other.core.link.where == self.core.link.where]
        freed = 0
        for store in peers:
            freed += store._free_now()
        return freed

    def _free_now(self) -> int:
        """This store's emergency rule now (see `_on_full`); nothing when its plan has no
        emergency rule, or another thread is freeing it already."""
        if not self.plan.emergency or not self._freeing.acquire(blocking=False):
            return 0
        try:
            found = self._redis_emergency(full=True)
        except RedisStoreError:
            return 0
        finally:
            self._freeing.release()
        self._finish_evictions(found)
        return len(found)

    def _redis_emergency(self, *, full: bool = False,
                         found: Optional[list[Victim]] = None) -> list[Victim]:
        """Evict (in the emergency order) while Redis' memory is past its emergency share;
        `full`: Redis just refused a write, so its own `maxmemory` is the limit that holds."""
        return redis_emergency(self.core, limit=self.redis_limit or self.policy_redis_limit,
                               order=self.plan.emergency_order, store=self.name, full=full,
                               found=found)

    def stats(self) -> RedisStoreStats:
        """Counts read from Redis now; when it cannot be reached, the last ones with
        `reachable=False` and the error, never an exception (`memguard.redis.figures`)."""
        return self.figures.stats(self.wait_bound)

    @property
    def unreachable_retry(self) -> float:
        """Seconds after a failure during which `stats()` does not ask Redis again."""
        return self.figures.unreachable_retry

    @unreachable_retry.setter
    def unreachable_retry(self, seconds: float) -> None:
        self.figures.unreachable_retry = seconds

    def refresh(self) -> None:
        """Update the figures `index` shows (jobs, bytes) from Redis."""
        jobs, _active, size, _pinned = self.core.figures()
        self.index.jobs, self.index.total_bytes = jobs, size

    def recency(self) -> list[Any]:
        """Job ids, least recently used first."""
        return list(self.core.recency())

    # -- internals -------------------------------------------------------------------------

    def _finish_evictions(self, victims: list[Victim]) -> list[EvictionEvent]:
        """Count evictions (id, size, cause) and tell the listeners, in this process."""
        events = [EvictionEvent(self.name, key, Cause(cause), size)
                  for key, size, cause in victims]
        for event in events:
            if event.cause is Cause.ABANDONED:  # once per job: the script removed it
                log_abandoned(self.name, event.key)
        if events:
            with self.lock:
                for event in events:
                    self.evictions[event.cause.value] += 1
            # Redis' memory, not the worker's, was freed: no reclaim of the worker is due.
            self.manager.notify_evictions(events, in_process=False)
        return events

    def _evicted(self, victims: list[Victim]) -> None:
        self._finish_evictions(victims)

    def _flush_reads(self) -> None:
        """Send the reads `@touches` batched as one recency update."""
        reads = self.index.reads
        if reads:
            self.index.reads = {}
            self.core.touch([key for key in reads if isinstance(key, str)])
