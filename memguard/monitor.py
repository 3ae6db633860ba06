"""The memory monitor: a daemon thread that samples memory and steps in before the limit.

Every ``check_interval`` the monitor samples memory (from the injected probe), moves between
the levels ``ok < warning < emergency < critical`` with hysteresis, runs the periodic pipeline
on every store, forces a full ``gc.collect()`` every ``gc_interval`` and, at ``emergency``,
evicts across all stores until the *estimated* freed bytes bring usage down to
``emergency_target``, then gives memory back (`memguard.memory.reclaim`) and *measures* what
came back. When evictions free results but usage does not fall (a fragmented heap), it stops
and says so instead of emptying every store. See docs/monitor.md.

Time comes only from ``manager.clock`` and memory only from the probe, so every decision can
be driven synchronously in tests with `memguard.testing.FakeClock` and `FakeProbe` through
`Monitor.tick`. The thread is only a loop around `tick`.
"""

from __future__ import annotations

import atexit
import collections
import gc
import logging
import os
import signal
import threading
import weakref
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Final, Optional, Union

import attrs

from memguard._units import format_duration, format_size, parse_duration
from memguard.memory import (
    CgroupProbe,
    MemorySample,
    Probe,
    ProcessProbe,
    detect_limit,
    heap_bytes,
    make_probe,
    reclaim,
)
from memguard.pipeline import CleanupReport, EvictionEvent
from memguard.policy import MemoryPolicy, Thresholds
from memguard.store import StoreStats

if TYPE_CHECKING:
    from memguard._manager import MemoryManager

__all__ = [
    "FRAGMENTATION_RATIO",
    "HYSTERESIS",
    "LEVELS",
    "MAX_ROUNDS",
    "THREAD_NAME",
    "MemoryStats",
    "Monitor",
    "TickResult",
    "growth_rate",
    "heroku_line",
    "next_level",
    "raw_level",
]

logger = logging.getLogger("memguard")

LEVELS: Final = ("ok", "warning", "emergency", "critical")
"""The memory levels, lowest first."""

_RANK: Final = {name: rank for rank, name in enumerate(LEVELS)}

HYSTERESIS: Final = 0.05
"""A level is left only when usage falls this share of its threshold below it (5%)."""

TRIM_AFTER: Final = 32 * 2**20
"""Once this much has been evicted (by estimate, by passes or by inserts over a bound) since the
last reclaim, a tick follows its pass with `reclaim()`: without it, glibc keeps the freed
arenas and a guarded process creeps up between emergencies."""
MAX_ROUNDS: Final = 3
"""An emergency evicts, reclaims and re-samples at most this many times."""

FRAGMENTATION_RATIO: Final = 0.5
"""A round whose measured fall is below this share of its estimate stops the emergency."""

THREAD_NAME: Final = "memguard-monitor"

_SIGNAL_POLL: Final = 0.25
"""With the SIGUSR1 handler installed, the thread waits in slices this long (seconds) so it
notices the handler's flag promptly; the handler itself takes no lock (see `_on_signal`)."""

_EXIT_TIMEOUT: Final = 2.0
"""How long the interpreter's exit waits for a monitor in the middle of a tick (seconds)."""

_FORK_TIMEOUT: Final = 5.0
"""How long ``fork()`` waits for a tick in progress to finish before forking anyway."""


def _rank(level: str) -> int:
    return _RANK[level]


# --------------------------------------------------------------------------------------------
# What the monitor reports


@attrs.frozen(slots=True)
class MemoryStats:
    """A snapshot of memory and the stores: what ``GET /memory`` serves and /health judges.

    `sample` is a fresh reading; `level` the monitor's level for it (hysteresis included);
    `thresholds` the policy's thresholds in bytes for the detected limit (None when the policy
    cannot be resolved); `stores` counts and sizes per store, never job contents;
    `recent_cleanups` the latest emergency cleanups and periodic passes that evicted something,
    oldest first. `growth_per_minute` is the least-squares slope of usage over the recent
    samples (since the last emergency, which would otherwise read as shrinkage), in bytes per
    minute; `time_to_limit` the seconds until usage reaches the limit at that rate (None when
    usage is not growing or there is no limit; 0 when already there). `monitoring` tells
    whether the monitor thread is running.
    """

    sample: MemorySample
    level: str
    thresholds: Optional[Thresholds]
    stores: tuple[StoreStats, ...]
    recent_cleanups: tuple[CleanupReport, ...]
    growth_per_minute: Optional[float]
    time_to_limit: Optional[float]
    monitoring: bool
    totals: Mapping[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict with the same keys as the attributes; sizes in bytes."""
        return {
            "sample": self.sample.to_dict(),
            "level": self.level,
            "thresholds": None if self.thresholds is None else attrs.asdict(self.thresholds),
            "stores": [_store_dict(store) for store in self.stores],
            "recent_cleanups": [report.to_dict() for report in self.recent_cleanups],
            "growth_per_minute": self.growth_per_minute,
            "time_to_limit": self.time_to_limit,
            "monitoring": self.monitoring,
            "totals": dict(self.totals),
        }


def _store_dict(store: StoreStats) -> dict[str, Any]:
    data = store.to_dict()
    data["evictions"] = dict(store.evictions)
    return data


@attrs.frozen(slots=True)
class TickResult:
    """What one `Monitor.tick` did, for tests and callers driving the monitor by hand.

    `sample` is None when the probe failed. `cleanup` is the periodic pass (None when it
    failed), `gc_collected` what the periodic full collection found (None when none was due),
    `emergency` the emergency cleanup when one ran, `recycled` whether the recycle hook was
    called, and `errors` one line per step that raised (each also logged with its traceback).
    """

    at: float
    sample: Optional[MemorySample]
    previous_level: str
    level: str
    cleanup: Optional[CleanupReport] = None
    gc_collected: Optional[int] = None
    emergency: Optional[CleanupReport] = None
    recycled: bool = False
    errors: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Pure helpers: levels and growth


def _threshold_of(thresholds: Thresholds, level: str) -> Optional[int]:
    if level == "ok":
        return 0
    value: Optional[int] = getattr(thresholds, level)
    return value


def raw_level(usage: int, thresholds: Thresholds) -> str:
    """The highest level whose threshold `usage` has reached (no hysteresis)."""
    found = "ok"
    for level in LEVELS[1:]:
        threshold = _threshold_of(thresholds, level)
        if threshold is not None and usage >= threshold:
            found = level
    return found


def next_level(current: str, usage: int, thresholds: Thresholds) -> str:
    """The level after `current` for `usage`: up at once, down only past the margin.

    Rising is immediate (usage at or above a threshold). Falling drops one level at a time
    while usage is below the current level's threshold minus `HYSTERESIS` of it, so usage
    hovering around a threshold does not flap (and log) on every sample.
    """
    reached = raw_level(usage, thresholds)
    if _rank(reached) >= _rank(current):
        return reached
    level = current
    while _rank(level) > _rank(reached):
        threshold = _threshold_of(thresholds, level)
        if threshold is not None and usage >= threshold * (1 - HYSTERESIS):
            break
        level = LEVELS[_rank(level) - 1]
    return level


def growth_rate(points: Sequence[tuple[float, int]]) -> Optional[float]:
    """Least-squares slope of usage over time in bytes per minute; None under two instants."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_u = sum(u for _, u in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var <= 0:
        return None
    cov = sum((t - mean_t) * (u - mean_u) for t, u in points)
    return cov / var * 60.0


def _time_to_limit(usage: int, limit: Optional[int], growth: Optional[float]) -> Optional[float]:
    if limit is None:
        return None
    if usage >= limit:
        return 0.0
    if growth is None or growth <= 0:
        return None
    return (limit - usage) / growth * 60.0


# --------------------------------------------------------------------------------------------
# Process-wide hooks: exit and fork (registered once, for every monitor, through weak refs)

_monitors: weakref.WeakSet[Monitor] = weakref.WeakSet()


def _stop_all_at_exit() -> None:
    for monitor in list(_monitors):
        monitor.stop(timeout=_EXIT_TIMEOUT)


def _before_fork() -> None:
    for monitor in list(_monitors):
        monitor._before_fork()


def _after_fork_in_parent() -> None:
    for monitor in list(_monitors):
        monitor._after_fork_in_parent()


def _after_fork_in_child() -> None:
    for monitor in list(_monitors):
        monitor._after_fork_in_child()


atexit.register(_stop_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


# --------------------------------------------------------------------------------------------
# The monitor


class Monitor:
    """Watches memory for one `MemoryManager` and cleans up its stores under pressure.

    Created by the manager (`MemoryManager.setup_memory_monitoring`); usable directly. All
    decisions happen in `tick`, which the thread calls every `interval` seconds and tests call
    by hand. Safe to call from any thread: ticks and emergencies are serialized.

    `on_recycle`, when set (by the gunicorn integration), is called once each time memory
    reaches ``critical`` if the policy says ``recycle = true``: it should ask the server to
    replace this worker gracefully. The monitor never kills anything itself.
    """

    def __init__(self, manager: MemoryManager, *, history: int = 360, cleanups: int = 20) -> None:
        self.manager = manager
        self.on_recycle: Optional[Callable[[], None]] = None
        self.history: collections.deque[tuple[float, int]] = collections.deque(maxlen=history)
        """(time, usage) of recent samples, oldest first."""
        self.recent_cleanups: collections.deque[CleanupReport] = collections.deque(
            maxlen=cleanups
        )
        """Recent emergency cleanups and evicting periodic passes, oldest first."""
        self.totals: dict[str, Any] = {"cleanups": {}, "freed_estimate_bytes": 0,
                                       "reclaimed_bytes": 0}
        """Running totals since start: cleanups by kind, bytes evicted (estimate) and given
        back (measured, when positive): the Prometheus counters."""
        self.failures = 0
        """How many steps of ticks (probe, pipeline, gc, emergency, hooks) raised so far."""
        self.ticks = 0
        self.last_sample: Optional[MemorySample] = None
        self._level = "ok"
        self._interval: Optional[float] = None
        self._work = threading.RLock()  # serializes ticks and emergencies
        self._state = threading.Lock()  # guards history/cleanups copies against the thread
        self._thread: Optional[threading.Thread] = None
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self._started = False
        self._fork_held = False
        # Probe and thresholds, rebuilt by policy_changed().
        self._own_probe: Optional[Probe] = None
        self._auto_limit: Optional[int] = None
        self._thresholds: Optional[Thresholds] = None
        self._thresholds_limit: Optional[int] = -1
        # Schedules (manager.clock time); None = not yet started.
        self._last_gc: Optional[float] = None
        self._evicted_at_reclaim = 0  # manager.evicted_bytes at the last reclaim
        self._last_summary: Optional[float] = None
        self._last_emergency: Optional[float] = None
        self._fit_from: Optional[float] = None
        self._stalled_usage: Optional[int] = None
        self._heap_high = False
        self._recycle_requested = False
        self._post_sample: Optional[MemorySample] = None  # the last emergency's final sample
        # SIGUSR1.
        self._signal_pending = False
        self._handler: Optional[Callable[[int, Optional[FrameType]], None]] = None
        _monitors.add(self)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Monitor {state} level={self._level} interval={format_duration(self.interval)}>"

    # -- configuration ----------------------------------------------------------------------

    @property
    def policy(self) -> MemoryPolicy:
        """The manager's current memory policy (read afresh each time)."""
        return self.manager.policy.memory

    @property
    def interval(self) -> float:
        """Seconds between ticks: `set_interval`'s value, else the policy's check_interval."""
        return self._interval if self._interval is not None else self.policy.check_interval

    def set_interval(self, value: Union[float, str, None]) -> None:
        """Tick every `value` (seconds or a duration such as ``"30s"``); None = the policy's.

        Takes effect at once: a waiting thread wakes and waits the new interval.
        """
        if value is None:
            self._interval = None
        else:
            seconds = parse_duration(value)
            if seconds <= 0:
                raise ValueError(f"the monitor interval must be above zero; got {value!r}")
            self._interval = seconds
        self._wake.set()

    def policy_changed(self) -> None:
        """Re-read thresholds, interval, probe and the signal setting from the manager's policy.

        The manager calls this after `apply_policy`; the thread picks the new values up at
        once. An interval set with `set_interval` stays in force.
        """
        with self._work:
            if self._own_probe is not None:
                _close(self._own_probe)
            self._own_probe = None
            self._auto_limit = None
            self._thresholds = None
            self._thresholds_limit = -1
        if self.running:
            self._update_signal_handler()
        self._wake.set()

    @property
    def probe(self) -> Probe:
        """The manager's probe when it has one, else one built from the policy's scope/limit."""
        injected = self.manager.probe
        if injected is not None:
            return injected
        if self._own_probe is None:
            memory = self.policy
            if isinstance(memory.limit, int):
                limit: Optional[int] = memory.limit
            elif memory.limit == "auto":
                limit = self._detected_limit()
            else:
                limit = None
            self._own_probe = make_probe(memory.scope, limit=limit)
        return self._own_probe

    def _detected_limit(self) -> int:
        if self._auto_limit is None:
            self._auto_limit = detect_limit()
        return self._auto_limit

    def thresholds(self, sample: Optional[MemorySample] = None) -> Thresholds:
        """The policy's thresholds in bytes, percentages resolved against the known limit.

        The limit is the policy's when it is a size, else the sample's (the probe's), else,
        for ``limit = "auto"``, the detected cgroup limit or physical RAM.
        """
        memory = self.policy
        limit = sample.limit if sample is not None else None
        if limit is None and memory.limit == "auto":
            limit = self._detected_limit()
        cached = self._thresholds
        if cached is not None and self._thresholds_limit == limit:
            return cached
        resolved = memory.resolve(limit)
        self._thresholds, self._thresholds_limit = resolved, limit
        return resolved

    # -- state --------------------------------------------------------------------------------

    @property
    def level(self) -> str:
        """The current level: ``"ok"``, ``"warning"``, ``"emergency"`` or ``"critical"``."""
        return self._level

    @property
    def running(self) -> bool:
        """True while the monitor thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def started(self) -> bool:
        """True from `start` until `stop`: the monitor is meant to be running.

        ``started and not running`` means the thread died (it should not: every step is
        guarded) or was lost; health checks report that.
        """
        return self._started

    # -- the thread ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the daemon thread ``memguard-monitor`` (idempotent); it ticks at once."""
        with self._work:
            self._started = True
            if self.running and not self._stop_event.is_set():
                return
            # Not running, or a stop() timed out on a thread still finishing its tick (it ends
            # as soon as that tick does): start a fresh thread with its own stop event.
            self._update_signal_handler()
            self._launch()

    def _launch(self) -> None:
        self._stop_event = stop = threading.Event()
        self._wake = threading.Event()
        thread = threading.Thread(target=self._run, args=(stop,), name=THREAD_NAME, daemon=True)
        self._thread = thread
        thread.start()

    def stop(self, timeout: Optional[float] = 5.0) -> bool:
        """Stop the thread and wait up to `timeout` seconds for it; True once it has ended.

        Prompt: the thread waits on an event that `stop` sets. A tick in progress finishes
        first. Called from the monitor thread itself (a callback), it only asks.
        """
        self._started = False
        self._stop_event.set()
        self._wake.set()
        self._remove_signal_handler()
        thread = self._thread
        if thread is None:
            return True
        if thread is threading.current_thread():
            return False
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("memguard: the monitor thread did not stop within %ss", timeout)
            return False
        if self._thread is thread:
            self._thread = None
        return True

    def _run(self, stop: threading.Event) -> None:
        logger.debug("memguard: monitor started, every %s", format_duration(self.interval))
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # tick guards each step; this is the last line of defence
                self.failures += 1
                logger.exception("memguard: monitor tick failed; carrying on")
            if stop.is_set():
                break
            self._wait(stop)
        logger.debug("memguard: monitor stopped")

    def _wait(self, stop: threading.Event) -> None:
        """Wait one interval, or less when woken (stop, new interval, SIGUSR1)."""
        wake = self._wake
        interval = self.interval
        if self._handler is None:
            wake.wait(interval)
        else:  # poll the signal flag, which the handler sets without taking any lock
            slices = max(1, int(interval / _SIGNAL_POLL + 0.999))
            for _ in range(slices):
                if wake.wait(interval / slices) or self._signal_pending or stop.is_set():
                    break
        wake.clear()

    # -- one check ----------------------------------------------------------------------------

    def tick(self) -> TickResult:
        """One synchronous check; what the thread does every interval.

        Sample; move between levels (logging each change once); log the heap warning, the
        opt-in ``sample#`` line and the periodic summary; run the periodic pipeline on every
        store; ``gc.collect()`` when ``gc_interval`` has passed; an emergency cleanup when usage
        is at or above ``emergency`` (cooldown permitting) or SIGUSR1 asked for one; at
        ``critical``, the recycle hook when enabled. A step that raises is logged with its
        traceback, counted in `failures`, and the other steps still run.
        """
        with self._work:
            return self._tick()

    def _tick(self) -> TickResult:
        clock = self.manager.clock
        memory = self.policy
        now = clock()
        self.ticks += 1
        errors: list[str] = []
        previous = self._level
        if self._last_gc is None:
            self._last_gc = now

        sample = self._guard(errors, "probe", self.probe)
        if sample is not None:
            self.last_sample = sample
            self._record(now, sample.usage)
            self._guard(errors, "level", self._observe, sample, memory)

        cleanup = self._guard(errors, "periodic cleanup", self.manager.run_cleanup)
        collected: Optional[int] = None
        evicted = self.manager.evicted_bytes
        if cleanup is not None and evicted - self._evicted_at_reclaim >= TRIM_AFTER:
            self._evicted_at_reclaim = evicted
            given_back = self._guard(errors, "reclaim", reclaim)
            if given_back is not None:
                self._last_gc = now  # reclaim() ran a full collection
                collected = given_back.collected
                after = self._guard(errors, "probe", self.probe)
                if after is not None and sample is not None:  # measured, like an emergency
                    cleanup = attrs.evolve(cleanup, usage_before=sample.usage,
                                           usage_after=after.usage)
                    sample = self.last_sample = after
                    self._record(clock(), after.usage)
        if cleanup is not None and cleanup.evicted:
            self._remember(cleanup)

        if collected is None and now - self._last_gc >= memory.gc_interval:
            self._last_gc = now
            collected = self._guard(errors, "gc", gc.collect)

        emergency: Optional[CleanupReport] = None
        if self._signal_pending:
            self._signal_pending = False
            logger.warning("memguard: SIGUSR1 received: emergency cleanup")
            emergency = self._guard(errors, "emergency", self._emergency, True)
        elif sample is not None and self._emergency_due(now, sample):
            emergency = self._guard(errors, "emergency", self._emergency, False)
        after = self._post_sample
        if emergency is not None and after is not None:
            self._post_sample = None
            self.last_sample = after
            self._guard(errors, "level", self._observe, after, memory, False)

        recycled = False
        if self._level == "critical" and memory.recycle and not self._recycle_requested:
            self._recycle_requested = True  # once per stay at critical
            recycled = bool(self._guard(errors, "recycle", self._recycle))

        if sample is not None and (
            self._last_summary is None or now - self._last_summary >= memory.summary_interval
        ):
            self._last_summary = now
            self._guard(errors, "summary", self._log_summary, self.last_sample or sample)

        return TickResult(
            at=now,
            sample=sample,
            previous_level=previous,
            level=self._level,
            cleanup=cleanup,
            gc_collected=collected,
            emergency=emergency,
            recycled=recycled,
            errors=tuple(errors),
        )

    def _guard(self, errors: list[str], step: str, call: Callable[..., Any], *args: Any) -> Any:
        """`call(*args)`, or None after logging and counting what it raised."""
        try:
            return call(*args)
        except Exception as error:
            self.failures += 1
            errors.append(f"{step}: {type(error).__name__}: {error}")
            logger.exception("memguard: monitor step %r failed; carrying on", step)
            return None

    def _record(self, now: float, usage: int) -> None:
        with self._state:
            self.history.append((now, usage))

    def _remember(self, report: CleanupReport) -> None:
        """Keep `report` among the recent ones and add it to the running totals."""
        with self._state:
            self.recent_cleanups.append(report)
            totals = self.totals
            totals["cleanups"][report.kind] = totals["cleanups"].get(report.kind, 0) + 1
            totals["freed_estimate_bytes"] += report.freed_estimate
            if report.reclaimed is not None and report.reclaimed > 0:
                totals["reclaimed_bytes"] += report.reclaimed

    def _observe(self, sample: MemorySample, memory: MemoryPolicy, extras: bool = True) -> None:
        """Move to the level `sample` calls for and log what changed (and, opt-in, a sample)."""
        thresholds = self.thresholds(sample)
        old = self._level
        new = next_level(old, sample.usage, thresholds)
        if new != old:
            self._level = new
            self._log_level_change(old, new, sample, thresholds)
            if _rank(new) < _rank("emergency"):
                self._stalled_usage = None  # pressure went away: emergencies may run again
            if new != "critical":
                self._recycle_requested = False
        if extras:
            self._check_heap(sample, thresholds)
            if memory.log_samples:
                logger.info("%s", heroku_line(sample, self._level))

    def _log_level_change(
        self, old: str, new: str, sample: MemorySample, thresholds: Thresholds
    ) -> None:
        usage = format_size(sample.usage)
        limit = "" if thresholds.limit is None else f", limit {format_size(thresholds.limit)}"
        if _rank(new) > _rank(old):
            bound = _threshold_of(thresholds, new) or 0
            text = f"usage {usage} >= {new} {format_size(bound)}{limit}"
        else:
            bound = _threshold_of(thresholds, old) or 0
            text = f"usage {usage} fell below {old} {format_size(bound)} - 5%{limit}"
        if new == "critical":
            severity = logging.CRITICAL
        elif new == "ok":
            severity = logging.INFO
        else:
            severity = logging.WARNING
        logger.log(severity, "memguard: memory level %s -> %s: %s", old, new, text)

    def _check_heap(self, sample: MemorySample, thresholds: Thresholds) -> None:
        bound = thresholds.warning_heap
        if bound is None or sample.heap is None:
            return
        if not self._heap_high and sample.heap >= bound:
            self._heap_high = True
            logger.warning(
                "memguard: heap %s >= warning_heap %s (rss %s)",
                format_size(sample.heap), format_size(bound), format_size(sample.rss),
            )
        elif self._heap_high and sample.heap < bound * (1 - HYSTERESIS):
            self._heap_high = False
            logger.info(
                "memguard: heap %s back below warning_heap %s",
                format_size(sample.heap), format_size(bound),
            )

    def _log_summary(self, sample: MemorySample) -> None:
        parts = []
        for name, group in self.manager.stores.items():
            jobs = sum(len(store.index) for store in group)
            size = sum(store.index.total_bytes for store in group)
            parts.append(f"{name}={jobs} ({format_size(size)})")
        share = "" if sample.utilization is None else f" ({sample.utilization:.0%} of limit)"
        logger.info(
            "memguard: usage %s%s, rss %s, level %s; jobs %s",
            format_size(sample.usage), share, format_size(sample.rss), self._level,
            " ".join(parts) or "none",
        )

    def _recycle(self) -> bool:
        hook = self.on_recycle
        if hook is None:
            logger.critical(
                "memguard: recycle = true but no server integration installed a recycle hook; "
                "nothing to ask (memguard never kills the process)"
            )
            return False
        logger.critical("memguard: memory critical: asking the server to recycle this worker")
        hook()
        return True

    # -- emergency ----------------------------------------------------------------------------

    def _emergency_due(self, now: float, sample: MemorySample) -> bool:
        """At or above ``emergency``, outside the cooldown, and not stalled at this usage."""
        bound = self.thresholds(sample).emergency
        if bound is None or sample.usage < bound:
            return False
        if self._cooling(now) is not None:
            return False
        stalled = self._stalled_usage
        # After a cleanup stopped for fragmentation, evicting more at the same usage would only
        # empty the stores; try again when usage has grown by the hysteresis margin.
        return stalled is None or sample.usage >= stalled + bound * HYSTERESIS

    def _cooling(self, now: float) -> Optional[float]:
        """Seconds of cooldown left since the last emergency, or None when none is left."""
        last = self._last_emergency
        if last is None:
            return None
        left = last + self.policy.cooldown - now
        return left if left > 0 else None

    def emergency(self, forced: bool = False) -> CleanupReport:
        """Evict across all stores down to ``emergency_target``, reclaim, and measure.

        Unless `forced`, refused during the cooldown (the report's note says so and nothing is
        recorded). See `_emergency` for the rounds and when they stop.
        """
        with self._work:
            return self._emergency(forced)

    def _emergency(self, forced: bool) -> CleanupReport:
        """Rounds of: evict ``usage - target`` bytes by estimate (largest store first), then
        `reclaim()` (gc + malloc_trim) and sample again. Rounds repeat, at most `MAX_ROUNDS`,
        while usage is still above the target and the last round's measured fall was at least
        `FRAGMENTATION_RATIO` of its estimate; a round that falls short is the fragmentation
        diagnosis: stop (noted and logged) rather than empty every store for nothing.
        """
        clock = self.manager.clock
        start = clock()
        left = self._cooling(start)
        if not forced and left is not None:
            return CleanupReport(
                "emergency", started_at=start,
                note=f"skipped: cooldown, {format_duration(round(left, 3))} left",
            )
        sample = self.probe()
        thresholds = self.thresholds(sample)
        target = _target(thresholds)
        before = usage = sample.usage
        events: list[EvictionEvent] = []
        notes: list[str] = []
        rounds = 0
        stalled = False
        while target is not None and usage > target and rounds < MAX_ROUNDS:
            rounds += 1
            heap_before = self._fresh_heap(sample)
            need = usage - target
            got = self.manager.evict_bytes(need)
            estimate = sum(event.size or 0 for event in got)
            events += got
            reclaim()
            sample = self.probe()
            fell = usage - sample.usage
            usage = sample.usage
            if usage <= target:
                break
            if estimate > 0 and fell < FRAGMENTATION_RATIO * estimate:
                heap_after = self._fresh_heap(sample)
                notes.append(_diagnose(estimate, fell, heap_before, heap_after))
                stalled = True
            if estimate < need:  # the budget was not spent: every store ran out
                notes.append(f"nothing left to evict: {self._unevictable()}")
                break
            if stalled:
                break
        else:
            if target is not None and usage > target:
                notes.append(f"still above target {format_size(target)} after "
                             f"{MAX_ROUNDS} rounds")
        if rounds == 0:  # nothing to evict for the target: still give back what is free
            reclaim()
            sample = self.probe()
            usage = sample.usage
        end = clock()
        report = CleanupReport.from_events(
            "emergency", events, started_at=start, duration=end - start,
            usage_before=before, usage_after=usage, note="; ".join(notes),
        )
        self._last_emergency = end
        self._evicted_at_reclaim = self.manager.evicted_bytes  # it reclaimed
        self._fit_from = end
        self._stalled_usage = usage if stalled else None
        self._post_sample = sample
        self._remember(report)
        self._record(end, usage)
        severity = logging.WARNING if stalled or notes else logging.INFO
        logger.log(severity, "memguard: %s", report.summary())
        return report

    def _fresh_heap(self, sample: MemorySample) -> Optional[int]:
        """The heap now: read directly for the real probes (their figure is rate-limited),
        else the injected probe's own figure."""
        if isinstance(self.probe, (ProcessProbe, CgroupProbe)):
            return heap_bytes()
        return sample.heap

    def _unevictable(self) -> str:
        jobs = active = 0
        for store in self.manager.handles():
            stats = store.stats()
            jobs += stats.jobs
            active += stats.active
        return f"{jobs} job(s) remain, {active} active or pinned"

    # -- questions ------------------------------------------------------------------------------

    def stats(self) -> MemoryStats:
        """A fresh `MemoryStats` (samples now; does not change the level or log anything)."""
        sample = self.probe()
        now = self.manager.clock()
        thresholds = self.thresholds(sample)
        level = next_level(self._level, sample.usage, thresholds)
        with self._state:
            points = list(self.history)
            cleanups = tuple(self.recent_cleanups)
            totals = {**self.totals, "cleanups": dict(self.totals["cleanups"])}
        since = self._fit_from
        recent = [(t, u) for t, u in points if since is None or t >= since]
        if not recent or recent[-1][0] < now:
            recent.append((now, sample.usage))
        growth = growth_rate(recent)
        limit = sample.limit if sample.limit is not None else thresholds.limit
        return MemoryStats(
            sample=sample,
            level=level,
            thresholds=thresholds,
            stores=tuple(store.stats() for store in self.manager.handles()),
            recent_cleanups=cleanups,
            growth_per_minute=growth,
            time_to_limit=_time_to_limit(sample.usage, limit, growth),
            monitoring=self.running,
            totals=totals,
        )

    def is_high(self, threshold_mb: Optional[float] = None) -> bool:
        """Usage now above `threshold_mb` MiB when given, else at warning level or above."""
        sample = self.probe()
        if threshold_mb is not None:
            return sample.usage > threshold_mb * 2**20
        level = next_level(self._level, sample.usage, self.thresholds(sample))
        return _rank(level) >= _rank("warning")

    # -- signals ------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        """SIGUSR1: only set a flag. No lock, no logging, no I/O: a handler runs between two
        bytecodes of the main thread, which may hold any of those locks at that moment."""
        self._signal_pending = True

    def _update_signal_handler(self) -> None:
        if self.policy.signal_cleanup and self._started:
            self._install_signal_handler()
        else:
            self._remove_signal_handler()

    def _install_signal_handler(self) -> None:
        """Install the SIGUSR1 handler when allowed: main thread, and SIGUSR1 at SIG_DFL."""
        if self._handler is not None or not hasattr(signal, "SIGUSR1"):
            return
        if threading.current_thread() is not threading.main_thread():
            logger.warning("memguard: signal_cleanup: not installing a SIGUSR1 handler "
                           "(only the main thread can; start the monitor there)")
            return
        current = signal.getsignal(signal.SIGUSR1)
        if current is not signal.SIG_DFL:
            logger.warning("memguard: signal_cleanup: SIGUSR1 already has a handler (%r); "
                           "leaving it to its owner", current)
            return
        handler = self._on_signal
        signal.signal(signal.SIGUSR1, handler)
        self._handler = handler
        self._wake.set()  # re-enter the wait in signal-polling slices
        logger.info("memguard: SIGUSR1 triggers an emergency cleanup (pid %d)", os.getpid())

    def _remove_signal_handler(self) -> None:
        """Put SIG_DFL back, but only if our handler is still the installed one."""
        handler = self._handler
        if handler is None:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # cannot from here; the handler only sets a flag nobody reads: harmless
        self._handler = None
        if signal.getsignal(signal.SIGUSR1) == handler:
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    # -- fork -----------------------------------------------------------------------------------

    def _before_fork(self) -> None:
        # Let a tick in progress finish, so the child never inherits a store lock or the work
        # lock held by a thread that does not exist there. Bounded: fork goes ahead regardless.
        self._fork_held = self._work.acquire(timeout=_FORK_TIMEOUT)

    def _after_fork_in_parent(self) -> None:
        if self._fork_held:
            self._fork_held = False
            self._work.release()

    def _after_fork_in_child(self) -> None:
        """Fresh locks and events; restart the thread if it was running in the parent."""
        self._fork_held = False
        self._work = threading.RLock()
        self._state = threading.Lock()
        was_running = self._started and self._thread is not None
        self._thread = None
        with self._state:
            self.history.clear()  # the parent's samples say nothing of the child's growth
        self._fit_from = None
        if was_running:
            try:
                self._launch()
            except Exception:
                logger.exception("memguard: could not restart the monitor after fork")


def _target(thresholds: Thresholds) -> Optional[int]:
    """Where an emergency cleans down to: emergency_target, else just under emergency."""
    if thresholds.emergency_target is not None:
        return thresholds.emergency_target
    if thresholds.emergency is not None:
        return int(thresholds.emergency * (1 - 2 * HYSTERESIS))
    return None


def _diagnose(estimate: int, fell: int, heap_before: Optional[int],
              heap_after: Optional[int]) -> str:
    """Why usage did not follow the evictions, from what the heap figure did."""
    text = (f"stopped: evicting ~{format_size(estimate)} lowered usage by only "
            f"{format_size(fell)} ({max(fell, 0) / estimate:.0%})")
    if heap_before is not None and heap_after is not None:
        heap_fell = heap_before - heap_after
        text += f"; heap {format_size(heap_before)} -> {format_size(heap_after)}"
        if heap_fell >= FRAGMENTATION_RATIO * estimate:
            return text + (": the results were freed but the allocator cannot return their "
                           "pages (fragmentation: live objects scattered among them); evicting "
                           "more would empty the stores for nothing")
        return text + (": the results were not freed (still referenced elsewhere) or the memory "
                       "is not held by the stores; evicting more would empty them for nothing")
    return text + (": likely fragmentation (freed memory the allocator cannot return) or "
                   "results still referenced elsewhere; evicting more would empty the stores "
                   "for nothing")


def heroku_line(sample: MemorySample, level: str) -> str:
    """A Heroku-style metrics line: ``sample#memguard.rss=431.7MB sample#memguard.level=ok``."""
    parts = [f"sample#memguard.usage={format_size(sample.usage)}",
             f"sample#memguard.rss={format_size(sample.rss)}"]
    if sample.swap:
        parts.append(f"sample#memguard.swap={format_size(sample.swap)}")
    if sample.heap is not None:
        parts.append(f"sample#memguard.heap={format_size(sample.heap)}")
    if sample.utilization is not None:
        parts.append(f"sample#memguard.utilization={sample.utilization * 100:.1f}%")
    parts.append(f"sample#memguard.level={level}")
    return " ".join(parts)


def _close(probe: Probe) -> None:
    close = getattr(probe, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            logger.debug("memguard: closing probe %r failed", probe, exc_info=True)
