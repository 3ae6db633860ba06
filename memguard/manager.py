"""`MemoryManager`: the registry of live stores, their policy, cleanups and listeners.

`memguard.manager` is the process-wide default instance; stores declared without
`manager=` register with it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, Callable, Optional, Union

from memguard._logging import announce, logger
from memguard.errors import PolicyError
from memguard.eviction.events import CleanupReport, EvictionEvent
from memguard.eviction.rules import Budget, Pass
from memguard.eviction.tiers import evict_in_global_order
from memguard.memory.reclaim import Reclaim, reclaim
from memguard.memory.samples import MemorySample
from memguard.monitor.levels import rank
from memguard.monitor.readings import MemoryStats
from memguard.monitor.thread import Monitor
from memguard.policy.files import policy_from_environment
from memguard.policy.policy import Policy
from memguard.policy.units import format_size
from memguard.stores import registry
from memguard.stores.building import attach, handle
from memguard.stores.handle import LocalHandle, _Backend
from memguard.stores.intake import Intake
from memguard.stores.protocol import StoreHandle, as_handle
from memguard.stores.trace import Recorder

EvictionCallback = Callable[[EvictionEvent], object]


class MemoryManager:
    """Keeps every registered store within its policy and the process within its memory."""

    def __init__(self, policy: Optional[Policy] = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 probe: Optional[Callable[[], MemorySample]] = None,
                 reclaim: Callable[..., Reclaim] = reclaim) -> None:
        self.clock = clock
        self.probe = probe
        #: How the monitor gives memory back (gc, then the allocator's trim); injected like the
        #: clock and the probe, so tests count calls instead of collecting their own process.
        self.reclaim = reclaim
        # No policy given: the one the environment names (MEMGUARD_POLICY and overrides).
        self._policy = policy if policy is not None else policy_from_environment()
        self._lock = threading.RLock()
        self._from_environment = False
        self._handles: dict[str, list[StoreHandle]] = {}
        self._handle_list: Optional[list[StoreHandle]] = None  # `handles()`, until a change
        self._plain: dict[int, LocalHandle] = {}
        self._callbacks: tuple[EvictionCallback, ...] = ()
        self.monitor: Optional[Monitor] = None
        # `under_pressure(fresh=True)`: when memory was last read for it, and what it said.
        self._fresh_at: Optional[float] = None
        self._fresh_pressed = False
        self.policy_error: Optional[PolicyError] = None
        self._started_in: Optional[int] = None  # the pid that announced its start
        #: Bytes evicted so far (by estimate) from this process's stores, whatever evicted them:
        #: passes, inserts over a bound, emergencies (not Redis stores' evictions, which free
        #: Redis' memory). The monitor gives memory back when enough has been freed.
        self.evicted_bytes = 0
        self.intake = Intake()  # inserts counted: a burst wakes the monitor early
        self.recorders: tuple[Recorder, ...] = ()
        registry.add_host(self)

    def __repr__(self) -> str:
        return f"<MemoryManager stores={sorted(self._handles)} policy={self.policy.source}>"

    # -- policy ------------------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        if self._from_environment:
            self._read_environment_policy()
        return self._policy

    def _read_environment_policy(self) -> None:
        """The default manager's policy, read from the environment when first asked for, not
        at ``import memguard`` (which reads no file). With a broken environment policy the
        built-in policy stands in and `start()` raises the error, so an app fails where it
        turns memguard on while CLI tools that report the problem still run."""
        with self._lock:
            if not self._from_environment:
                return
            self._from_environment = False
            try:
                self._policy = policy_from_environment()
            except PolicyError as error:
                self.policy_error = error

    def load_policy(self, path_or_policy: Union[str, Path, Policy]) -> Policy:
        """Apply a policy to every live store at once, or (on any error) change nothing."""
        from memguard.policy.files import load_policy

        policy = (path_or_policy if isinstance(path_or_policy, Policy)
                  else load_policy(path_or_policy))
        self.apply_policy(policy)
        return policy

    def apply_policy(self, policy: Policy) -> None:
        with self._lock:
            handles = [h for group in self._handles.values() for h in group]
            effective = []
            for store in handles:  # validate everything before applying anything
                try:
                    effective.append(store.effective_policy(policy))
                except (ValueError, TypeError) as error:
                    if isinstance(error, PolicyError):
                        raise
                    raise PolicyError(str(error), source=policy.source,
                                      key=f"stores.{store.name}") from None
            for store, store_policy in zip(handles, effective):
                store.apply_policy(policy, store_policy)
            self._policy = policy
            self._from_environment = False  # an explicit policy replaces the environment's
            self.policy_error = None
        if self.monitor is not None:
            self.monitor.policy_changed()
            self._update_companions()

    # -- the registry -----------------------------------------------------------------------------

    def register(self, store_handle: StoreHandle, owner: Any) -> None:
        """Track `store_handle` while `owner` (the store object) lives."""
        with self._lock:
            if store_handle.policy_source is not self.policy:  # a reload raced its creation
                store_handle.apply_policy(self.policy)  # may raise: then nothing registered
            self._handles.setdefault(store_handle.name, []).append(store_handle)
            self._handle_list = None
            try:
                weakref.finalize(owner, self._unregister, store_handle)
            except TypeError:  # plain dicts cannot be weakly referenced: kept until unregistered
                if not isinstance(store_handle, LocalHandle):  # (only adopted dicts are)
                    raise
                self._plain[id(owner)] = store_handle
            for recorder in self.recorders:
                recorder.attach(store_handle)

    def _unregister(self, store_handle: StoreHandle) -> None:
        with self._lock:
            group = self._handles.get(store_handle.name, [])
            self._handle_list = None
            if store_handle in group:
                group.remove(store_handle)
            if not group:
                self._handles.pop(store_handle.name, None)
            for key, plain in list(self._plain.items()):
                if plain is store_handle:
                    del self._plain[key]

    def forget(self, store: Any) -> bool:
        """Stop managing `store` (a store, or its `StoreHandle`): no more passes, emergency
        cleanups or stats for it; its jobs stay where they are. Meant for dicts adopted
        with `setup_job_store_cleanup`, which the manager would otherwise keep referencing;
        a decorated store's own insert-time bounds keep applying. Returns False if `store`
        was not registered with this manager. A plain dict the app no longer references is
        forgotten by itself at the next pass.
        """
        found = as_handle(store)
        given_handle = found is not None
        if found is None:
            found = self._plain.get(id(store)) or as_handle(getattr(store, "_memguard", None))
        with self._lock:
            registered = found is not None and any(
                found is h for group in self._handles.values() for h in group)
            if not registered or found is None:
                return False
            self._unregister(found)
        if isinstance(found, LocalHandle) and found.adopted and not given_handle:
            with contextlib.suppress(AttributeError, TypeError):
                if getattr(store, "_memguard", None) is found:
                    attach(store, None)  # an adopted MutableMapping: let it go entirely
        return True

    def _forget_orphans(self) -> None:
        """Forget adopted plain dicts nothing else references any more (lock held)."""
        for found in [h for h in self._plain.values() if h.orphaned()]:
            self._unregister(found)

    @property
    def stores(self) -> Mapping[str, tuple[StoreHandle, ...]]:
        """Store name -> the live handles of that name (usually one)."""
        with self._lock:
            return {name: tuple(group) for name, group in sorted(self._handles.items())}

    def plain_handle(self, store: Any) -> Optional[LocalHandle]:
        """The handle this manager gave the plain dict `store`, if any."""
        with self._lock:
            return self._plain.get(id(store))

    def handles(self) -> list[StoreHandle]:
        found = self._handle_list  # read without the lock: a change since sets it to None
        if found is not None and not self._plain:
            return found[:]
        with self._lock:
            if self._plain:
                self._forget_orphans()
            found = self._handle_list
            if found is None:
                found = self._handle_list = [
                    h for _, group in sorted(self._handles.items()) for h in group]
            return found[:]

    def setup_job_store_cleanup(self, store: MutableMapping[Any, Any], name: str,
                                max_age: Union[float, str, None] = None,
                                max_jobs: Optional[int] = None, **rules: Any) -> StoreHandle:
        """Manage `store` under `name`: a managed store gets these rules added; a plain dict
        is adopted (it cannot report its writes, so each pass reconciles its keys, O(n))."""
        declared = {"max_age": max_age, "max_jobs": max_jobs, **rules}
        existing = as_handle(getattr(store, "_memguard", None)) or self._plain.get(id(store))
        if existing is not None:
            try:
                existing.declare(**declared)
            except (ValueError, TypeError) as error:
                raise _setup_error(error, name) from None
            return existing
        declared = {k: v for k, v in declared.items() if v is not None}
        adopt = getattr(store, "__memguard_adopt__", None)
        if adopt is not None:  # a store type that adopts itself, or refuses (RedisStore)
            adopted: StoreHandle = adopt(self, name, declared)
            return adopted
        backend = _Backend(store, get=type(store).__getitem__, delete=type(store).__delitem__,
                           keys=type(store).keys)
        backend.needs_sync = True
        try:
            store_handle = LocalHandle(name, manager=self, declared=declared, backend=backend)
        except (ValueError, TypeError) as error:
            raise _setup_error(error, name) from None
        with contextlib.suppress(AttributeError, TypeError):
            attach(store, store_handle)  # plain dicts take no attributes: found by registry
        store_handle.reconcile()
        self.register(store_handle, store)
        return store_handle

    def touch_job(self, store: Any, key: Any) -> None:
        """Mark job `key` of `store` as just used."""
        handle(store).touch(key)

    # -- cleanups -------------------------------------------------------------------------------

    def run_cleanup(self) -> CleanupReport:
        """One periodic pass over every store, synchronously. Soft bounds (`bounds = "soft"`)
        are enforced by it only under memory pressure: the monitor's level at or above
        `warning` (`under_pressure`)."""
        start = self.clock()
        pressure: Optional[bool] = None
        events: list[EvictionEvent] = []
        for store in self.handles():
            if type(store) is LocalHandle and store.nothing_due(start):
                continue  # O(1): a pass would evict nothing and has no upkeep to do
            if pressure is None:
                pressure = self.under_pressure()
            events += _isolated(store, Pass(now=start, order=store.policy.order,
                                            pressure=pressure))
        if not events:
            return CleanupReport("periodic", {}, 0, start, self.clock() - start)
        report = CleanupReport.from_events("periodic", events, started_at=start,
                                           duration=self.clock() - start)
        if report.evicted:  # announced: the seed's runbook greps for these lines
            announce(logging.INFO, "Memory cleanup: %s", report.summary())
        return report

    def under_pressure(self, *, fresh: bool = False) -> bool:
        """Whether memory is at or above `warning`: the monitor's level (False without a
        monitor, or before its first sample); when a pass enforces soft bounds.

        With `fresh` (a write into a soft-bounded store asks), a last sample within
        `NEAR_WARNING` of `warning` is not trusted: memory is read again (at most every
        `FRESH_EVERY` seconds of the clock), so the write that crosses `warning` cuts its
        store back at once instead of at the monitor's next sample.
        """
        monitor = self.monitor
        if monitor is None:
            return False
        if rank(monitor.level) >= rank("warning"):
            return True
        last = monitor.last_sample
        if not fresh or last is None:
            return False
        warning = monitor.thresholds(last).warning
        if warning is None or last.usage < warning * (1 - NEAR_WARNING):
            return False
        now = self.clock()
        if self._fresh_at is not None and now - self._fresh_at < FRESH_EVERY:
            return self._fresh_pressed
        self._fresh_at = now
        self._fresh_pressed = monitor.probe().usage >= warning
        return self._fresh_pressed

    def evict_bytes(self, amount: int, *, kind: str = "emergency") -> list[EvictionEvent]:
        """Free about `amount` bytes (by estimate) from the stores: an emergency budget.

        With `[memory] emergency_order = "delivered"` (the default) the victims come from all
        stores in one order (`memguard.eviction.tiers`): each store's own bounds first (what
        its next pass would evict anyway), then delivered results, oldest delivery first,
        then jobs past a soft bound, then undelivered results, oldest finished first; active
        jobs never. With `lru`, `oldest` or `largest`, stores are visited largest first (by
        weighed bytes), each evicting in that order until the budget is spent. Redis stores
        run their own emergency, on Redis' memory, either way.
        """
        budget = Budget(amount)
        now = self.clock()
        events: list[EvictionEvent] = []
        for one in self.handles():  # sizes inserts left to weigh: the order goes by bytes
            if isinstance(one, LocalHandle):
                with one.lock:
                    one.index.weigh_deferred()
        stores = sorted(self.handles(), key=lambda h: h.index.total_bytes, reverse=True)
        if self.policy.memory.emergency_order == "delivered":
            local = [h for h in stores if isinstance(h, LocalHandle)
                     and h.plan.emergency and h.plan.emergency_order == "delivered"]
            for one in local:  # bounds first, and every active job looked at again
                events += _isolated(one, Pass(now=now, order=one.policy.order,
                                              budget=budget, store_emergency=False))
            if budget.remaining > 0 and local:
                events += _global_order(local, budget, now)
            # Then each store's own emergency rule: Redis stores' (on Redis' memory), and
            # in-process ones only if budget is left (what no tier holds: none, as a rule).
            stores = [h for h in stores
                      if budget.remaining > 0 or not isinstance(h, LocalHandle)]
        for store in stores:
            events += _isolated(store, Pass(now=now, order=store.policy.order, budget=budget))
        return events

    def notice_finished(self) -> None:
        """Let every in-process store look again at a batch of its running jobs (the
        monitor does this at each sample: `LocalHandle.notice_finished`)."""
        for store in self.handles():
            if isinstance(store, LocalHandle):
                try:
                    store.notice_finished()
                except Exception:
                    logger.exception("memguard: re-checking the running jobs of store %s "
                                     "failed", store.name)

    def emergency_cleanup(self) -> CleanupReport:
        """Evict until usage is down to the emergency target, then reclaim and re-sample."""
        return self._monitor().emergency(forced=True)

    # -- monitoring (the thread lives in memguard.monitor) -------------------------------------

    def _monitor(self) -> Monitor:
        with self._lock:
            if self.monitor is None:
                self.monitor = Monitor(self)
            return self.monitor

    def setup_memory_monitoring(self, interval: Union[float, str, None] = None, *,
                                announce: bool = True) -> Monitor:
        """Start the background monitor: it samples every `sample_interval` and runs the
        periodic pass every `interval` (default the policy's check_interval).

        `announce=False` leaves the start-up line to a later `announce_start()`: a server
        hook that starts monitoring before the app (and its stores) is loaded uses it, so the
        line can name the stores.

        Raises the environment's `PolicyError` if the default policy could not be loaded.
        """
        if self.policy_error is not None:
            raise self.policy_error
        monitor = self._monitor()
        if interval is not None:
            monitor.set_interval(interval)
        monitor.start()
        self._update_companions()
        if announce:
            self.announce_start()
        return monitor

    def announce_start(self) -> None:
        """Log the start-up line (policy, limit, scope, thresholds, stores) once per process
        (a forked worker says it too), when monitoring is on; later calls do nothing."""
        monitor = self.monitor
        if monitor is None or self._started_in == os.getpid():
            return
        self._started_in = os.getpid()
        self._announce_start(monitor)

    def _announce_start(self, monitor: Monitor) -> None:
        """One line when monitoring starts: the policy, the limit and where it comes from (or
        how to give one when none is known), the scope, the thresholds in bytes and the
        stores registered so far. Reads no sample (a probe may be slow): the limit is the
        policy's or the container's."""
        memory = self.policy.memory
        scope = memory.scope
        if isinstance(memory.limit, int):
            limit: Optional[int] = memory.limit
            said = f"limit {format_size(memory.limit)} (the policy's)"
        elif self.probe is not None:  # a probe of the app's own says what its limit is
            limit, said = None, "limit as the manager's probe reports it"
        else:
            limit = monitor.readings.detected_limit() if memory.limit == "auto" else None
            if scope == "auto":
                scope = "cgroup" if limit is not None else "process"
            said = (f"limit {format_size(limit)} (the container's)" if limit is not None else
                    "no memory limit known (limit \"auto\" found no container limit): "
                    "thresholds given as percentages are off; set [memory] limit or "
                    "MEMGUARD_MEMORY_LIMIT")
        thresholds = memory.resolve(limit)
        levels = ", ".join(f"{name} {format_size(value)}" for name in
                           ("warning", "emergency", "critical")
                           if (value := getattr(thresholds, name)) is not None)
        with self._lock:
            names = sorted(self._handles)
        stores = f"stores {', '.join(names)}" if names else "no store registered yet"
        announce(logging.INFO, "Memory guard started in pid %d: policy %s, %s, scope %s; %s; %s",
                 os.getpid(), self.policy.source, said, scope, levels or "no thresholds",
                 stores)

    def _update_companions(self) -> None:
        """Start or stop, as the policy says, the threads that run beside a started monitor:
        the listener for `memguard cleanup --pid` (``signal_cleanup``) and the policy file
        watcher (``watch``), both in memguard.monitor.triggers."""
        from memguard.monitor.triggers import update_listener, update_watcher

        started = bool(getattr(self.monitor, "started", False))
        memory = self.policy.memory
        update_listener(self, started and memory.signal_cleanup)
        update_watcher(self, started and memory.watch)

    def start(self) -> None:
        """Start monitoring with the policy's settings (idempotent)."""
        self.setup_memory_monitoring()

    def stop(self) -> None:
        """Stop the monitor thread, if any, and wait for it."""
        if self.monitor is not None:
            self.monitor.stop()
            self._update_companions()

    def get_memory_stats(self) -> MemoryStats:
        """A fresh `MemoryStats`: sample, level, thresholds, stores, recent cleanups."""
        return self._monitor().stats()

    def is_memory_high(self, threshold_mb: Optional[float] = None) -> bool:
        """True at warning level or above, or above `threshold_mb` MiB when given."""
        return self._monitor().is_high(threshold_mb)

    # -- trace recording (memguard.stores.trace) ---------------------------------------------

    def record(self, path: Union[str, Path]) -> Recorder:
        """Record what every store of this manager does (no keys, no contents) to `path`,
        for `memguard tune`, until the returned recorder is closed."""
        with self._lock:
            recorder = Recorder(self, path)
            for store in self.handles():
                recorder.attach(store)
            self.recorders += (recorder,)
        return recorder

    def stop_recording(self, recorder: Recorder) -> None:
        """Stop attaching new stores to `recorder` (its `close()` calls this)."""
        with self._lock:
            self.recorders = tuple(r for r in self.recorders if r is not recorder)

    # -- listeners --------------------------------------------------------------------------------

    def on_evict(self, callback: EvictionCallback) -> EvictionCallback:
        """Call `callback(event)` after each eviction, outside store locks. Usable as decorator."""
        with self._lock:
            self._callbacks += (callback,)
        return callback

    def remove_evict_callback(self, callback: EvictionCallback) -> None:
        with self._lock:
            self._callbacks = tuple(c for c in self._callbacks if c is not callback)

    @property
    def has_listeners(self) -> bool:
        """Whether any `on_evict` callback is registered (inserts build events only then)."""
        return bool(self._callbacks)

    def count_freed(self, nbytes: int) -> None:
        """Add `nbytes` evicted from this process' stores to `evicted_bytes`."""
        if nbytes:
            with self._lock:
                self.evicted_bytes += nbytes

    def notify_evictions(self, events: list[EvictionEvent], *, in_process: bool = True) -> None:
        """Count what `events` freed and call the `on_evict` callbacks (outside store locks).

        `in_process=False` (Redis stores): the bytes freed were Redis', not this worker's, so
        they stay out of `evicted_bytes`, which cues the monitor to give memory back.
        """
        if in_process:
            self.count_freed(sum(event.size or 0 for event in events))
        for callback in self._callbacks:
            for event in events:
                try:
                    callback(event)
                except Exception:
                    logger.exception("memguard: on_evict callback %r failed", callback)


#: A write into a soft-bounded store reads memory afresh when the monitor's last sample is
#: within this share of `warning` (`MemoryManager.under_pressure`).
NEAR_WARNING = 0.03
#: ... at most this often (seconds of the manager's clock).
FRESH_EVERY = 0.05


def all_managers() -> list[MemoryManager]:
    """Every live manager (the default one and any an app created)."""
    return [host for host in registry.hosts() if isinstance(host, MemoryManager)]


def _isolated(store: StoreHandle, ctx: Pass) -> list[EvictionEvent]:
    """One store's pass; a failure is logged and the other stores still get theirs."""
    try:
        return store.run_pass(ctx)
    except Exception:
        logger.exception("memguard: the pass over store %s failed", store.name)
        return []


def _global_order(stores: list[LocalHandle], budget: Budget, now: float) -> list[EvictionEvent]:
    """Spend `budget` across `stores` in the global order; a failure is logged (the stores'
    own emergency rules then take over)."""
    try:
        victims = evict_in_global_order(stores, budget, now=now)
    except Exception:
        logger.exception("memguard: the emergency in the global order failed")
        return []
    events: list[EvictionEvent] = []
    for at, run in itertools.groupby(victims, key=lambda pair: pair[0]):
        # each run of one store's victims at once: listeners hear them in eviction order
        events += stores[at].finish_evictions([victim for _, victim in run])
    return events


def _setup_error(error: Exception, name: str) -> PolicyError:
    return PolicyError(str(error), source="setup_job_store_cleanup", key=name)


def _default_manager() -> MemoryManager:
    """The process-wide manager, whose policy the environment names (MEMGUARD_POLICY and the
    overrides), read when first used (`MemoryManager._read_environment_policy`)."""
    default = MemoryManager(Policy())
    default._from_environment = True
    return default


def _after_fork_in_child() -> None:
    """A manager lock another thread held at the fork would never be released in the child."""
    for candidate in all_managers():
        candidate._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
manager = _default_manager()
registry.set_default(manager)
