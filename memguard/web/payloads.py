"""The endpoints' payloads, framework-free; each reads the manager once."""

from __future__ import annotations

import datetime
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Callable, Final, Optional

import attrs

from memguard.monitor.levels import LEVEL_STATUS, LEVELS
from memguard.policy.units import format_size

if TYPE_CHECKING:
    from memguard.manager import MemoryManager

HEALTH_CONTENT_TYPE: Final = "application/health+json"
JSON_CONTENT_TYPE: Final = "application/json"

MAX_BODY_BYTES: Final = 64 * 1024
"""The largest request body read (a cleanup takes none); larger bodies get 413."""


ROUTES: Final[Mapping[str, tuple[str, ...]]] = {
    "/health": ("GET", "HEAD"),
    "/health/ready": ("GET", "HEAD"),
    "/health/live": ("GET", "HEAD"),
    "/memory": ("GET", "HEAD"),
    "/memory/cleanup": ("POST",),
    "/memory/dashboard": ("GET", "HEAD"),
    "/metrics": ("GET", "HEAD"),
}
"""Path (below the prefix) -> the methods it answers."""

WallClock = Callable[[], float]
Headers = tuple[tuple[str, str], ...]


def _default_manager(manager: Optional[MemoryManager]) -> MemoryManager:
    if manager is not None:
        return manager
    from memguard.manager import manager as default

    return default


def _iso(wall_clock: WallClock) -> str:
    """The wall time as RFC 3339 UTC, the ``time`` field of the health-check draft."""
    moment = datetime.datetime.fromtimestamp(wall_clock(), tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats (an infinite time to the limit) by None: JSON has no inf."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _monitor_state(manager: MemoryManager) -> tuple[bool, bool]:
    """(started, running) of the manager's monitor, without creating or sampling one.

    `started` is the monitor's own flag: true from `start()` until `stop()`.
    """
    monitor = manager.monitor
    if monitor is None:
        return False, False
    running = bool(getattr(monitor, "running", False))
    started = bool(getattr(monitor, "started", running))
    return started, running


def _identity() -> dict[str, Any]:
    """The health-check draft's ``version`` (memguard's) and ``serviceId`` (who answered:
    the Heroku dyno name from ``DYNO``, else the host name, and the pid), plus ``pid``."""
    import socket

    from memguard._version import version

    pid = os.getpid()
    where = os.environ.get("DYNO") or socket.gethostname()
    return {"version": version(), "serviceId": f"{where}:{pid}", "pid": pid}


def _health_json(status: str, description: str, notes: list[str],
                 checks: dict[str, Any]) -> dict[str, Any]:
    """A draft health payload: `notes` one line each, always; ``output`` (them joined by
    ``; ``) only when not ``pass``, as the draft says."""
    payload: dict[str, Any] = {"status": status, **_identity(), "description": description}
    if notes:
        if status != "pass":
            payload["output"] = "; ".join(notes)
        payload["notes"] = notes
    payload["checks"] = checks
    return payload


def _check(status: str, output: Optional[str] = None, **fields: Any) -> dict[str, Any]:
    """One check object; its ``output`` is dropped on ``pass``, as the draft says."""
    check = {**fields, "status": status}
    if output is not None and status != "pass":
        check["output"] = output
    return check


def _fmt_size(size: Optional[int]) -> str:
    """Sizes as every other surface writes them (`format_size`: 512.0MB, 4.0GB)."""
    return "unknown" if size is None else format_size(size)


def live_payload(manager: Optional[MemoryManager] = None, *,
                 wall_clock: WallClock = time.time) -> tuple[int, dict[str, Any]]:
    """Liveness: (200, pass) while the monitor runs, or when it is not meant to run (never
    started, or stopped on purpose with `stop()`); (503, fail) when it was started and its
    thread is gone without a `stop()` (it died). Samples nothing, takes no lock."""
    manager = _default_manager(manager)
    started, running = _monitor_state(manager)
    if running:
        status, output = "pass", "monitor running"
    elif started:
        status, output = "fail", "monitor was started and is no longer running"
    else:  # never started, or stopped on purpose (stop()): nothing is meant to be running
        status, output = "pass", "monitor not started"
    checks = {"memguard:monitor": [_check(status, output, componentType="component",
                                          observedValue=running, time=_iso(wall_clock))]}
    payload = _health_json(status, "memguard liveness", [output], checks)
    return (503 if status == "fail" else 200), payload


def health_payload(manager: Optional[MemoryManager] = None, *,
                   wall_clock: WallClock = time.time) -> tuple[int, dict[str, Any]]:
    """Readiness in the IETF health-check draft format: (status code, payload).

    ``status`` follows the memory level (`LEVEL_STATUS`), and is never ``pass`` while
    something makes the reading untrustworthy (DESIGN section 4): the monitor is not running
    (``memguard:monitor``), a store cannot be reached (``memguard:stores``, Redis stores), or
    no memory limit is known (``memory:utilization``). Each such case is a ``warn`` with a
    note saying which. The ``memory:utilization`` check reports usage as a percentage of the
    limit (``observedValue`` is null when no limit is known), and ``memory:usage`` the usage
    in bytes. A probe that fails makes the check ``fail`` (503) with the error in ``output``.
    """
    manager = _default_manager(manager)
    now = _iso(wall_clock)
    try:
        sample, level, thresholds = _reading(manager)
    except Exception as error:  # the probe failed: say so, never raise out of a health check
        output = f"memory stats unavailable: {type(error).__name__}: {error}"[:300]
        failed = {"memory:utilization": [_check(
            "fail", output, componentType="system", observedValue=None,
            observedUnit="percent", time=now)]}
        return 503, _health_json("fail", "memguard memory health", [output], failed)

    status = LEVEL_STATUS.get(level, "warn")
    utilization = sample.utilization
    summary = (f"level {level}: usage {_fmt_size(sample.usage)} of limit "
               f"{_fmt_size(sample.limit)}, scope {sample.scope}")
    limit_note = _limit_note(sample.limit, thresholds.get("limit"))
    monitor_note = monitor_problem(manager)
    unreachable = _store_reachability(manager)
    store_notes = [f"store {name!r} unreachable: {error}" for name, error in unreachable
                   if error is not None]
    utilization_status = _worst(status, "warn") if limit_note else status
    checks: dict[str, list[dict[str, Any]]] = {
        "memory:utilization": [_check(
            utilization_status, "; ".join([summary, *([limit_note] if limit_note else [])]),
            componentType="system",
            observedValue=None if utilization is None else round(utilization * 100, 2),
            observedUnit="percent", time=now, level=level)],
        "memory:usage": [_check(status, componentType="system", observedValue=sample.usage,
                                observedUnit="bytes", time=now, thresholds=thresholds,
                                scope=sample.scope)],
        "memguard:monitor": [_check(
            "warn" if monitor_note else "pass", monitor_note, componentType="component",
            observedValue=monitor_note is None, time=now)],
    }
    if unreachable:
        checks["memguard:stores"] = [_check(
            "pass" if error is None else "warn", None if error is None else f"unreachable: {error}",
            componentId=name, componentType="datastore", observedValue=error is None, time=now)
            for name, error in unreachable]
    notes = [note for note in (limit_note, monitor_note, *store_notes) if note]
    if notes:
        status = _worst(status, "warn")
    payload = _health_json(status, "memguard memory health", [summary, *notes], checks)
    return (503 if status == "fail" else 200), _json_safe(payload)


_STATUS_ORDER: Final = ("pass", "warn", "fail")


def _worst(*statuses: str) -> str:
    return max(statuses, key=lambda s: _STATUS_ORDER.index(s) if s in _STATUS_ORDER else 1)


NO_LIMIT_NOTE: Final = ("no memory limit known: no container limit was found for limit "
                        "\"auto\", so thresholds given as percentages are off; set [memory] "
                        "limit in the policy or MEMGUARD_MEMORY_LIMIT")


def _limit_note(*limits: Optional[int]) -> Optional[str]:
    """`NO_LIMIT_NOTE` when none of `limits` (the sample's, the thresholds') is known."""
    return None if any(limit is not None for limit in limits) else NO_LIMIT_NOTE


def monitor_problem(manager: MemoryManager) -> Optional[str]:
    """Why the manager's monitor is not running, or None while it runs."""
    started, running = _monitor_state(manager)
    if running:
        return None
    if started:
        return "monitor not running: it was started and is no longer running (its thread died)"
    monitor = manager.monitor
    if monitor is None or not getattr(monitor, "ticks", 0):
        return ("monitor not running: never started (memguard.manager.start(), "
                "init_app(app), or the gunicorn post_fork hook start it)")
    return "monitor not running: stopped"


def _store_reachability(manager: MemoryManager,
                        stores: Optional[Iterable[Any]] = None) -> list[tuple[str, Optional[str]]]:
    """(name, error or None) of each store that reports whether it can be reached (Redis
    stores: `reachable` in their stats); in-process stores are always reachable and not
    listed. Without `stores`, reads the stats of the other stores only (a Redis store asks
    Redis, or answers at once for a few seconds after a failure)."""
    if stores is None:
        stores = _all_store_stats(manager)
    found: list[tuple[str, Optional[str]]] = []
    for store in stores:
        reachable = getattr(store, "reachable", None)
        if reachable is None:
            continue
        error = None if reachable else str(getattr(store, "error", None) or "no answer")
        found.append((str(store.name), error))
    return found


def _all_store_stats(manager: MemoryManager) -> list[Any]:
    """The stats of every store that could be unreachable: in-process stores (a
    `LocalHandle`) always answer, and are skipped (a health check reads no store of them)."""
    from memguard.stores.handle import LocalHandle

    stats: list[Any] = []
    for handle in manager.handles():
        if isinstance(handle, LocalHandle):
            continue
        try:
            stats.append(handle.stats())
        except Exception as error:  # a store whose stats raise: unreachable, as far as we know
            stats.append(_Unreadable(handle.name, f"{type(error).__name__}: {error}"))
    return stats


@attrs.frozen
class _Unreadable:
    name: str
    error: str
    reachable: bool = False


def health_summary(manager: MemoryManager, stats: Any) -> dict[str, Any]:
    """``{"status": "pass"|"warn"|"fail", "notes": [...]}`` for `/memory` and the dashboard:
    the level's status, lifted to ``warn`` for the same reasons `/health` gives."""
    sample = stats.sample
    thresholds = _thresholds_dict(stats)
    notes = [note for note in (_limit_note(sample.limit, thresholds.get("limit")),
                               monitor_problem(manager)) if note]
    notes += [f"store {name!r} unreachable: {error}"
              for name, error in _store_reachability(manager, stats.stores)
              if error is not None]
    status = LEVEL_STATUS.get(str(stats.level), "warn")
    return {"status": _worst(status, "warn") if notes else status, "notes": notes}


def _reading(manager: MemoryManager) -> tuple[Any, str, dict[str, Any]]:
    """(sample, level, thresholds) for a health check: one probe read, no store walk.

    Once the manager has a monitor this asks it directly (the same level `MemoryStats` would
    report, hysteresis included) instead of building full stats, which visit every store
    under its lock: health checks come every few seconds from every load balancer.
    """
    monitor = manager.monitor
    if monitor is None:
        stats = manager.get_memory_stats()
        return stats.sample, str(stats.level), _thresholds_dict(stats)
    from memguard.monitor.levels import next_level

    sample = monitor.probe()
    thresholds = monitor.thresholds(sample)
    level = next_level(monitor.level, sample.usage, thresholds)
    return sample, level, _as_dict(thresholds)


def _thresholds_dict(stats: Any) -> dict[str, Any]:
    return _as_dict(getattr(stats, "thresholds", None))


def _as_dict(thresholds: Any) -> dict[str, Any]:
    if thresholds is None:
        return {}
    if isinstance(thresholds, Mapping):
        return dict(thresholds)
    if attrs.has(type(thresholds)):
        return attrs.asdict(thresholds)
    return {}


def memory_payload(manager: Optional[MemoryManager] = None, *,
                   wall_clock: WallClock = time.time) -> dict[str, Any]:
    """The whole `MemoryStats` as JSON-safe data, plus the pid, the wall time of reading and
    the manager's clock now (`recent_cleanups[].started_at` are readings of that clock).

    Everything comes from `MemoryStats.to_dict()`: counts and sizes in bytes, never a job; and
    ``allocator``, `memguard.memory.allocators.detect_allocator()` (who serves small objects,
    which malloc, which hook reclaim calls); ``health``, `health_summary` (what `/health`
    would say and why).
    """
    manager = _default_manager(manager)
    stats = manager.get_memory_stats()
    payload: dict[str, Any] = dict(stats.to_dict())
    payload.setdefault("level", str(stats.level))
    payload.setdefault("thresholds", _thresholds_dict(stats))
    payload["pid"] = os.getpid()
    payload["time"] = _iso(wall_clock)
    payload["clock"] = manager.clock()  # the cleanups' started_at are on this clock
    from memguard.memory.allocators import detect_allocator

    payload["allocator"] = detect_allocator().to_dict()  # what reclaim() can give back
    payload["health"] = health_summary(manager, stats)  # what /health would say, and why
    result: dict[str, Any] = _json_safe(payload)
    return result


def metrics_payload(manager: Optional[MemoryManager] = None, *,
                    accept: Optional[str] = None) -> tuple[bytes, str]:
    """Prometheus exposition of the manager's state: (body, content type).

    Each call builds a fresh `CollectorRegistry` holding one collector that reads one
    `MemoryStats`, so nothing is registered globally (safe with several managers, workers
    and test runs). `accept` picks OpenMetrics when the scraper asks for it. Every series is
    labelled with the answering ``pid``, or aggregated over the workers when
    ``PROMETHEUS_MULTIPROC_DIR`` is set (`memguard.web.prometheus`); the standard ``process_*``
    and ``python_gc_*`` families come along.
    """
    from memguard.web.prometheus import exposition

    return exposition(snapshot_collector(_default_manager(manager)), accept)


def snapshot_collector(manager: MemoryManager) -> Callable[[], Any]:
    """A factory of fresh collectors over `manager`'s figures, for `memguard.web.prometheus`."""
    return lambda: _StatsCollector(manager.get_memory_stats(), manager)


class _StatsCollector:
    """A prometheus-client collector over one `MemoryStats` snapshot (base units only)."""

    def __init__(self, stats: Any, manager: MemoryManager) -> None:
        self.stats = stats
        self.manager = manager

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.stats
        sample = stats.sample
        yield GaugeMetricFamily("memguard_memory_usage_bytes",
                                "Memory usage compared against the thresholds "
                                "(process RSS + swap, or the cgroup's usage).",
                                value=sample.usage)
        yield GaugeMetricFamily("memguard_memory_rss_bytes",
                                "Resident set size of this process.", value=sample.rss)
        yield GaugeMetricFamily("memguard_memory_swap_bytes",
                                "Swap used by this process (or cgroup).", value=sample.swap)
        if sample.heap is not None:
            yield GaugeMetricFamily("memguard_memory_heap_bytes",
                                    "Bytes malloc holds for live objects.", value=sample.heap)
        if sample.limit is not None:
            yield GaugeMetricFamily("memguard_memory_limit_bytes",
                                    "The memory limit thresholds are relative to.",
                                    value=sample.limit)
            yield GaugeMetricFamily("memguard_memory_utilization_ratio",
                                    "usage / limit (1 = at the limit).",
                                    value=sample.usage / sample.limit)
        thresholds = GaugeMetricFamily("memguard_memory_threshold_bytes",
                                       "Configured thresholds resolved to bytes.",
                                       labels=["threshold"])
        for name, value in sorted(_thresholds_dict(stats).items()):
            if name == "limit":  # memguard_memory_limit_bytes carries it
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                thresholds.add_metric([name], float(value))
        yield thresholds

        level = str(stats.level)
        levels = GaugeMetricFamily("memguard_memory_level",
                                   "1 for the current memory level, 0 for the others.",
                                   labels=["level"])
        for name in LEVELS:
            levels.add_metric([name], 1.0 if name == level else 0.0)
        yield levels
        if level in LEVELS:
            yield GaugeMetricFamily("memguard_memory_severity",
                                    "Memory level as a number: 0 ok, 1 warning, 2 emergency, "
                                    "3 critical.", value=LEVELS.index(level))

        growth = getattr(stats, "growth_per_minute", None)
        if isinstance(growth, (int, float)) and math.isfinite(growth):
            yield GaugeMetricFamily("memguard_memory_growth_bytes_per_second",
                                    "Recent trend of memory usage.", value=growth / 60.0)
        time_to_limit = getattr(stats, "time_to_limit", None)
        if isinstance(time_to_limit, (int, float)) and math.isfinite(time_to_limit):
            yield GaugeMetricFamily("memguard_memory_time_to_limit_seconds",
                                    "Estimated time until usage reaches the limit at the "
                                    "recent growth rate.", value=time_to_limit)
        peak = (getattr(stats, "totals", {}) or {}).get("peak_usage_bytes")
        if isinstance(peak, (int, float)):
            yield GaugeMetricFamily("memguard_memory_peak_bytes",
                                    "Highest usage a sample read since start, samples taken "
                                    "during cleanups included.", value=float(peak))
        _, running = _monitor_state(self.manager)
        yield GaugeMetricFamily("memguard_monitor_running",
                                "1 while the background monitor thread runs.",
                                value=1.0 if running else 0.0)

        yield from self._stores(GaugeMetricFamily, CounterMetricFamily)
        yield from self._cleanups(CounterMetricFamily)

    def _stores(self, gauge: Any, counter: Any) -> Iterator[Any]:
        """Per-store families; several live instances of one store name are summed."""
        fields = (("jobs", "memguard_store_jobs", "Jobs held in the store."),
                  ("active", "memguard_store_active_jobs", "Jobs that are active (never evicted)."),
                  ("pinned", "memguard_store_pinned_jobs", "Jobs pinned by a caller."),
                  ("bytes", "memguard_store_bytes", "Estimated bytes of the weighed jobs."),
                  ("unweighed", "memguard_store_unweighed_jobs", "Jobs not yet weighed."))
        totals: dict[str, dict[str, float]] = {}
        evictions: dict[tuple[str, str], float] = {}
        up: dict[str, float] = {}
        for store in getattr(self.stats, "stores", ()):
            name = str(store.name)
            # 0 when any instance of the name cannot be reached (a Redis store whose server
            # is down); in-process stores are always up
            reachable = getattr(store, "reachable", True) is not False
            up[name] = min(up.get(name, 1.0), 1.0 if reachable else 0.0)
            row = totals.setdefault(name, dict.fromkeys([f[0] for f in fields], 0.0))
            for field, _, _ in fields:
                row[field] += float(getattr(store, field, 0) or 0)
            for cause, count in dict(getattr(store, "evictions", {}) or {}).items():
                key = (name, str(cause))
                evictions[key] = evictions.get(key, 0.0) + float(count)
        for field, metric, documentation in fields:
            family = gauge(metric, documentation, labels=["store"])
            for name, row in sorted(totals.items()):
                family.add_metric([name], row[field])
            yield family
        family = gauge("memguard_store_up", "1 while the store can be reached (a Redis "
                       "store's server answers), 0 when it cannot.", labels=["store"])
        for name, value in sorted(up.items()):
            family.add_metric([name], value)
        yield family
        family = counter("memguard_evictions", "Jobs evicted, by store and cause.",
                         labels=["store", "cause"])
        for (name, cause), count in sorted(evictions.items()):
            family.add_metric([name, cause], count)
        yield family

    def _cleanups(self, counter: Any) -> Iterator[Any]:
        """Cumulative cleanup counters, when the monitor keeps them."""
        totals = getattr(self.stats, "totals", {}) or {}
        cleanups = counter("memguard_cleanups", "Cleanups run, by kind.", labels=["kind"])
        for kind, count in sorted(totals.get("cleanups", {}).items()):
            cleanups.add_metric([str(kind)], float(count))
        yield cleanups
        reclaimed = totals.get("reclaimed_bytes")
        if isinstance(reclaimed, (int, float)):
            yield counter("memguard_reclaimed_bytes",
                          "Bytes given back by emergency cleanups (usage before - after, "
                          "counted when positive).", value=float(reclaimed))
        freed = totals.get("freed_estimate_bytes")
        if isinstance(freed, (int, float)):
            yield counter("memguard_freed_estimate_bytes",
                          "Estimated bytes of the jobs evicted from this process's stores, "
                          "by any bound, pass or emergency.", value=float(freed))
