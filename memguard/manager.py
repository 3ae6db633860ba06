"""`MemoryManager`: a process's stores under one policy, cleanups and memory monitor.

`memguard.manager` is the process-wide default instance; stores declared without
`manager=` register with it. The parts the manager composes live in the layers below, one
concern each (`MemoryManager`'s docstring names them).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, Callable, Optional, Union

from memguard.errors import PolicyError
from memguard.eviction.events import CleanupReport, EvictionEvent
from memguard.eviction.listeners import EvictionCallback, Listeners
from memguard.memory.reclaim import Reclaim, reclaim
from memguard.memory.samples import MemorySample
from memguard.monitor.pressure import PressureGauge
from memguard.monitor.readings import MemoryStats
from memguard.monitor.startup import StartupLine
from memguard.monitor.thread import Monitor
from memguard.policy.files import policy_from_environment
from memguard.policy.policy import Policy
from memguard.stores import cleanups, registry
from memguard.stores.building import handle
from memguard.stores.handle import LocalHandle
from memguard.stores.intake import Intake
from memguard.stores.protocol import StoreHandle
from memguard.stores.roster import Roster, adopt
from memguard.stores.trace import Recorder


class MemoryManager:
    """Keeps every registered store within its policy and the process within its memory.

    It holds the policy and the monitor, and composes small parts that each read alone: the
    registered stores (`memguard.stores.roster`), the cleanups spread over them
    (`memguard.stores.cleanups`), the `on_evict` listeners (`memguard.eviction.listeners`),
    the pressure a soft-bounded write asks about (`memguard.monitor.pressure`) and the
    start-up line (`memguard.monitor.startup`).
    """

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
        self._stores = Roster(self._lock)
        self._listeners = Listeners()
        self.monitor: Optional[Monitor] = None
        self._pressure = PressureGauge(lambda: self.clock())
        self.policy_error: Optional[PolicyError] = None
        self._start_line = StartupLine()
        #: Bytes evicted so far (by estimate) from this process's stores, whatever evicted them:
        #: passes, inserts over a bound, emergencies (not Redis stores' evictions, which free
        #: Redis' memory). The monitor gives memory back when enough has been freed.
        self.evicted_bytes = 0
        self.intake = Intake()  # inserts counted: a burst wakes the monitor early
        self.recorders: tuple[Recorder, ...] = ()
        registry.add_host(self)

    def __repr__(self) -> str:
        return f"<MemoryManager stores={self._stores.names()} policy={self.policy.source}>"

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
            self._stores.apply_policy(policy)  # to every store, or (on any error) to none
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
            self._stores.add(store_handle, owner)
            for recorder in self.recorders:
                recorder.attach(store_handle)

    def forget(self, store: Any) -> bool:
        """Stop managing `store` (a store, or its `StoreHandle`): no more passes, emergency
        cleanups or stats for it; its jobs stay where they are. Meant for dicts adopted
        with `setup_job_store_cleanup`, which the manager would otherwise keep referencing;
        a decorated store's own insert-time bounds keep applying. Returns False if `store`
        was not registered with this manager. A plain dict the app no longer references is
        forgotten by itself at the next pass.
        """
        return self._stores.forget(store)

    @property
    def stores(self) -> Mapping[str, tuple[StoreHandle, ...]]:
        """Store name -> the live handles of that name (usually one)."""
        return self._stores.by_name()

    def plain_handle(self, store: Any) -> Optional[LocalHandle]:
        """The handle this manager gave the plain dict `store`, if any."""
        return self._stores.plain_handle(store)

    def handles(self) -> list[StoreHandle]:
        return self._stores.handles()

    def setup_job_store_cleanup(self, store: MutableMapping[Any, Any], name: str,
                                max_age: Union[float, str, None] = None,
                                max_jobs: Optional[int] = None, **rules: Any) -> StoreHandle:
        """Manage `store` under `name`: a managed store gets these rules added; a plain dict
        is adopted (it cannot report its writes, so each pass reconciles its keys, O(n))."""
        return adopt(self, store, name, {"max_age": max_age, "max_jobs": max_jobs, **rules})

    def touch_job(self, store: Any, key: Any) -> None:
        """Mark job `key` of `store` as just used."""
        handle(store).touch(key)

    # -- cleanups -------------------------------------------------------------------------------

    def run_cleanup(self) -> CleanupReport:
        """One periodic pass over every store, synchronously. Soft bounds (`bounds = "soft"`)
        are enforced by it only under memory pressure: the monitor's level at or above
        `warning` (`under_pressure`)."""
        return cleanups.periodic_pass(self.handles(), clock=self.clock,
                                      under_pressure=self.under_pressure)

    def under_pressure(self, *, fresh: bool = False) -> bool:
        """Whether memory is at or above `warning`: the monitor's level (False without a
        monitor, or before its first sample); when a pass enforces soft bounds.

        With `fresh` (a write into a soft-bounded store asks), a last sample close to
        `warning` is not trusted: memory is read again (rate-limited), so the write that
        crosses `warning` cuts its store back at once instead of at the monitor's next
        sample (`memguard.monitor.pressure`).
        """
        return self._pressure.under_pressure(self.monitor, fresh=fresh)

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
        return cleanups.spend_budget(self.handles(), amount, now=self.clock(),
                                     emergency_order=self.policy.memory.emergency_order)

    def notice_finished(self) -> None:
        """Let every in-process store look again at a batch of its running jobs (the
        monitor does this at each sample: `LocalHandle.notice_finished`)."""
        cleanups.notice_finished(self.handles())

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
        (a forked worker says it too), when monitoring is on; later calls do nothing
        (`memguard.monitor.startup`)."""
        monitor = self.monitor
        if monitor is not None:
            self._start_line.say_once(self.policy, own_probe=self.probe is not None,
                                      detected_limit=monitor.readings.detected_limit,
                                      stores=self._stores.names)

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
            self._listeners.add(callback)
        return callback

    def remove_evict_callback(self, callback: EvictionCallback) -> None:
        with self._lock:
            self._listeners.remove(callback)

    @property
    def has_listeners(self) -> bool:
        """Whether any `on_evict` callback is registered (inserts build events only then)."""
        return bool(self._listeners.callbacks)

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
            self.count_freed(sum([event.size or 0 for event in events]))
        if self._listeners.callbacks:  # (no call at all on an insert nobody listens to)
            self._listeners.notify(events)


def all_managers() -> list[MemoryManager]:
    """Every live manager (the default one and any an app created)."""
    return [host for host in registry.hosts() if isinstance(host, MemoryManager)]


def _default_manager() -> MemoryManager:
    """The process-wide manager, whose policy the environment names (MEMGUARD_POLICY and the
    overrides), read when first used (`MemoryManager._read_environment_policy`)."""
    default = MemoryManager(Policy())
    default._from_environment = True
    return default


def _after_fork_in_child() -> None:
    """A manager lock another thread held at the fork would never be released in the child."""
    for candidate in all_managers():
        candidate._lock = candidate._stores.lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
manager = _default_manager()
registry.set_default(manager)
