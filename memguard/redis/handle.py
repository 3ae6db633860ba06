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
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
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
from memguard.policy.units import format_size
from memguard.redis._core import RedisCore, Victim
from memguard.redis.index import RedisIndex, RedisStoreStats
from memguard.redis.offload import PENDING, Offloaded
from memguard.stores.overrides import say_overrides
from memguard.stores.protocol import StoreHandle

if TYPE_CHECKING:
    from memguard.stores.building import _Spec
    from memguard.stores.registry import StoreHost


#: The Redis emergency rule acts when Redis' used memory reaches this share of its limit,
#: and evicts (by stored bytes) down to the target share.
EMERGENCY_SHARE = 0.90
TARGET_SHARE = 0.80
#: Seconds a pin holds without renewal (a crashed worker's pins lapse after this).
PIN_LEASE = 30.0
#: Seconds after a failed stats read during which `stats()` reports the store unreachable
#: without asking Redis again: a host that drops packets costs the connect timeout (2 s) per
#: try, which `/memory` and `/metrics` would otherwise pay at every request, per store.
UNREACHABLE_RETRY = 5.0
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
        self.pin_lease = PIN_LEASE
        self.unreachable_retry = UNREACHABLE_RETRY
        self.last_error: Optional[str] = None
        self._holder = uuid.uuid4().hex[:12]
        self._renewer: Optional[threading.Thread] = None
        self._last: Optional[RedisStoreStats] = None
        core.on_evicted = self._evicted
        core.before_call = self._flush_reads
        core.on_full = self._on_full
        _live_handles.add(self)
        self._freeing = threading.Lock()
        self.wait_bound = WAIT_BOUND
        self._passes = Offloaded(f"memguard-redis-pass-{name}")
        self._stats = Offloaded(f"memguard-redis-stats-{name}", join=True)
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
        return f"<RedisHandle {self.name!r} at {self.core.where} jobs={self.index.jobs}>"

    @property
    def lock(self) -> threading.RLock:
        return self.index.lock

    @property
    def holder(self) -> str:
        """Who holds this process's pins (a forked child is another holder)."""
        return f"{self._holder}.{os.getpid()}"

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
        with self.lock:
            count = self.index.pins.get(key, 0)
            if count == 0:
                self.core.pin([key], self.holder, self.pin_lease)
            self.index.pins[key] = count + 1
            self._start_renewer()

    def unpin(self, key: Any) -> None:
        with self.lock:
            count = self.index.pins.get(key, 0)
            if count > 1:
                self.index.pins[key] = count - 1
                return
            self.index.pins.pop(key, None)
            if count == 1:
                self.core.unpin(key, self.holder)

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
        wait = self.wait_bound / 4 if self._known_unreachable() else self.wait_bound
        outcome = self._passes.call(self._pass_now, wait)
        return [] if outcome is PENDING else list(outcome)

    def _known_unreachable(self) -> Optional[float]:
        """Seconds since an operation found Redis unreachable, if none got an answer since
        and that was less than `unreachable_retry` ago; else None."""
        failed = self.core.unavailable
        if failed is not None and self.core.answered_at < failed[0]:
            age = time.monotonic() - failed[0]
            if 0 <= age < self.unreachable_retry:
                return age
        return None

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
            self.last_error = str(error)
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
                          if other is not self and other.core.where == self.core.where]
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
        used, maxmemory = self.core.memory()
        limit = self.redis_limit or self.policy_redis_limit or maxmemory
        if full and maxmemory:
            limit = min(limit, maxmemory)
        if not limit or used < (TARGET_SHARE if full else EMERGENCY_SHARE) * limit:
            return []
        need = max(int(used - TARGET_SHARE * limit), 1)
        found = [] if found is None else found
        before = len(found)
        self.core.evict_bytes(self.plan.emergency_order, need, found)
        logger.warning("memguard: Redis memory %s of %s: emergency evicted %d job(s) from %s",
                       format_size(used), format_size(limit), len(found) - before, self.name)
        return found

    def stats(self) -> RedisStoreStats:
        """Counts read from Redis now; when it cannot be reached, the last ones with
        `reachable=False` and the error (never an exception: /memory must still answer).

        Once any operation of this store (stats included) found Redis unreachable, Redis is
        not asked again for `unreachable_retry` seconds, unless a script of this store (a
        read, a write, a pass) got an answer since: the store is reported unreachable at
        once, with that error and its age.
        """
        age = self._known_unreachable()
        failed = self.core.unavailable
        if age is not None and failed is not None:
            return self._unreachable(f"{failed[1]} ({age:.1f} s ago; tried again "
                                     f"{self.unreachable_retry:g} s after a failure)")
        try:
            read = self._stats.call(self._read_stats, self.wait_bound)
        except RedisStoreError as error:
            self.last_error = str(error)  # an unreachable Redis: remembered by the core
            return self._unreachable(str(error))
        if read is PENDING:
            return self._unreachable(f"Redis at {self.core.where} did not answer stats within "
                                     f"{self.wait_bound:g} s (the last figures read)")
        return read  # type: ignore[no-any-return]

    def _read_stats(self) -> RedisStoreStats:
        """`stats()` as Redis answers it now (may raise RedisStoreError)."""
        jobs, active, size, pinned = self.core.figures()
        used, limit = self.core.memory()
        self.last_error = None
        self.index.jobs, self.index.total_bytes = jobs, size
        stats = RedisStoreStats(
            name=self.name, jobs=jobs, active=active, pinned=pinned, bytes=size, unweighed=0,
            evictions=dict(self.evictions), redis=self.core.where, redis_used_memory=used,
            redis_limit=self.redis_limit or self.policy_redis_limit or limit or None)
        self._last = stats
        return stats

    def _unreachable(self, error: str) -> RedisStoreStats:
        """Stats of a store Redis did not answer for: the last figures read (by a stats
        call or a pass; zeros if none)."""
        last = self._last
        return RedisStoreStats(
            name=self.name, jobs=self.index.jobs, active=last.active if last else 0,
            pinned=last.pinned if last else 0, bytes=self.index.total_bytes,
            unweighed=0, evictions=dict(self.evictions), reachable=False,
            error=error, redis=self.core.where)

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

    def _start_renewer(self) -> None:
        renewer = self._renewer
        if renewer is not None and renewer.is_alive():
            return
        self._renewer = threading.Thread(target=self._renew, name=f"memguard-pins-{self.name}",
                                         daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        """Renew this process's pins every third of the lease while any is held; a failed
        renewal is logged and retried (the pins lapse if Redis stays away longer)."""
        wait = threading.Event()
        while True:
            wait.wait(self.pin_lease / 3)
            with self.lock:
                held = list(self.index.pins)
                if not held:
                    self._renewer = None
                    return
            try:
                self.core.pin(held, self.holder, self.pin_lease)
            except Exception:
                logger.exception("memguard: could not renew %d pin(s) of store %s",
                                 len(held), self.name)

