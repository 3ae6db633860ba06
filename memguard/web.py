"""HTTP surfaces: health, memory and metrics payloads, and plain ASGI and WSGI apps serving them.

Operators look at a running app, not at a test. This module turns a `MemoryManager`'s state
into what load balancers, dashboards and people read:

- ``GET /health`` and ``GET /health/ready``: ``application/health+json`` in the IETF
  health-check draft format (``pass`` / ``warn`` / ``fail`` with a ``memory:utilization``
  check); 503 on ``fail`` so an orchestrator stops routing to a process past its critical
  threshold.
- ``GET /health/live``: liveness, cheap (no sampling): 200 while the monitor runs or was never
  started, 503 once it was started and is no longer running.
- ``GET /memory``: the full `MemoryStats` (sample, thresholds, level, per-store counts and
  evictions by cause, recent cleanups, growth rate, time to the limit) as JSON.
- ``POST /memory/cleanup``: an emergency cleanup, only with a configured bearer token.
- ``GET /memory/dashboard``: a self-contained HTML page that polls ``/memory``.
- ``GET /metrics``: Prometheus text (or OpenMetrics, by ``Accept``) via prometheus-client.

Nothing here ever serialises a job: every payload is built from counts and sizes
(`StoreStats`, `CleanupReport`), never from the stores' values or keys.

The framework-free core is `Endpoints`: it maps (method, path, headers, body) to a `Response`,
and hands back work that blocks (sampling every store, a cleanup) as a thunk so that the ASGI
app can run it off the event loop. `asgi_app`, `wsgi_app` and the Flask and FastAPI adapters
(`memguard.integrations`) are thin shells around it. docs/http.md documents every payload.
"""

from __future__ import annotations

import asyncio
import datetime
import hmac
import json
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Callable, Final, Optional, Union

import attrs

from memguard.levels import LEVEL_STATUS, LEVELS
from memguard.options import ENV_TOKEN as TOKEN_ENV

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from memguard._manager import MemoryManager

__all__ = [
    "HEALTH_CONTENT_TYPE",
    "JSON_CONTENT_TYPE",
    "LEVEL_STATUS",
    "MAX_BODY_BYTES",
    "ROUTES",
    "TOKEN_ENV",
    "Endpoints",
    "Response",
    "asgi_app",
    "health_payload",
    "live_payload",
    "memory_payload",
    "metrics_payload",
    "run_guarded",
    "wsgi_app",
]

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


# --------------------------------------------------------------------------------------------
# Payloads (framework-free; each reads the manager once)


def _default_manager(manager: Optional[MemoryManager]) -> MemoryManager:
    if manager is not None:
        return manager
    from memguard._manager import manager as default

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


def _health_json(status: str, description: str, output: Optional[str],
                 checks: dict[str, Any]) -> dict[str, Any]:
    """A draft health payload: ``output`` only when not ``pass`` (the draft: omit it on pass);
    the same text, always, in ``notes``."""
    payload: dict[str, Any] = {"status": status, **_identity(), "description": description}
    if output is not None:
        if status != "pass":
            payload["output"] = output
        payload["notes"] = [output]
    payload["checks"] = checks
    return payload


def _check(status: str, output: Optional[str] = None, **fields: Any) -> dict[str, Any]:
    """One check object; its ``output`` is dropped on ``pass``, as the draft says."""
    check = {**fields, "status": status}
    if output is not None and status != "pass":
        check["output"] = output
    return check


def _fmt_mib(size: Optional[int]) -> str:
    return "unknown" if size is None else f"{size / 2**20:.1f}MB"


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
    payload = _health_json(status, "memguard liveness", output, checks)
    return (503 if status == "fail" else 200), payload


def health_payload(manager: Optional[MemoryManager] = None, *,
                   wall_clock: WallClock = time.time) -> tuple[int, dict[str, Any]]:
    """Readiness in the IETF health-check draft format: (status code, payload).

    ``status`` follows the memory level (`LEVEL_STATUS`); the ``memory:utilization`` check
    reports usage as a percentage of the limit (``observedValue`` is null when no limit is
    known), and ``memory:usage`` the usage in bytes. A probe that fails makes the check
    ``fail`` (503) with the error in ``output``. A monitor that was started and stopped
    running adds a ``warn``.
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
        return 503, _health_json("fail", "memguard memory health", output, failed)

    status = LEVEL_STATUS.get(level, "warn")
    utilization = sample.utilization
    output = (f"level {level}: usage {_fmt_mib(sample.usage)} of limit "
              f"{_fmt_mib(sample.limit)} ({sample.scope})")
    checks: dict[str, list[dict[str, Any]]] = {
        "memory:utilization": [_check(
            status, output, componentType="system",
            observedValue=None if utilization is None else round(utilization * 100, 2),
            observedUnit="percent", time=now, level=level)],
        "memory:usage": [_check(status, componentType="system", observedValue=sample.usage,
                                observedUnit="bytes", time=now, thresholds=thresholds)],
    }
    started, running = _monitor_state(manager)
    monitor_status = "warn" if started and not running else "pass"
    checks["memguard:monitor"] = [_check(
        monitor_status, "monitor was started and is no longer running",
        componentType="component", observedValue=running, time=now)]
    if monitor_status == "warn" and status == "pass":
        status = "warn"
        output = f"{output}; the monitor was started and is no longer running"
    payload = _health_json(status, "memguard memory health", output, checks)
    return (503 if status == "fail" else 200), _json_safe(payload)


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
    from memguard.monitor import next_level

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
    ``allocator``, `memguard.memory.detect_allocator()` (who serves small objects, which malloc,
    which hook reclaim calls).
    """
    manager = _default_manager(manager)
    stats = manager.get_memory_stats()
    payload: dict[str, Any] = dict(stats.to_dict())
    payload.setdefault("level", str(stats.level))
    payload.setdefault("thresholds", _thresholds_dict(stats))
    payload["pid"] = os.getpid()
    payload["time"] = _iso(wall_clock)
    payload["clock"] = manager.clock()  # the cleanups' started_at are on this clock
    from memguard.memory import detect_allocator

    payload["allocator"] = detect_allocator().to_dict()  # what reclaim() can give back
    result: dict[str, Any] = _json_safe(payload)
    return result


def metrics_payload(manager: Optional[MemoryManager] = None, *,
                    accept: Optional[str] = None) -> tuple[bytes, str]:
    """Prometheus exposition of the manager's state: (body, content type).

    Each call builds a fresh `CollectorRegistry` holding one collector that reads one
    `MemoryStats`, so nothing is registered globally (safe with several managers, workers
    and test runs). `accept` picks OpenMetrics when the scraper asks for it. Every series is
    labelled with the answering ``pid``, or aggregated over the workers when
    ``PROMETHEUS_MULTIPROC_DIR`` is set (`memguard.metrics`); the standard ``process_*``
    and ``python_gc_*`` families come along.
    """
    from memguard.metrics import exposition

    return exposition(snapshot_collector(_default_manager(manager)), accept)


def snapshot_collector(manager: MemoryManager) -> Callable[[], Any]:
    """A factory of fresh collectors over `manager`'s figures, for `memguard.metrics`."""
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
        for store in getattr(self.stats, "stores", ()):
            name = str(store.name)
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
                          "Estimated bytes of the jobs cleanups evicted.", value=float(freed))


# --------------------------------------------------------------------------------------------
# The framework-free core


@attrs.frozen
class Response:
    """What to send back: status, headers (content type and length included) and body."""

    status: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> Optional[str]:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


Work = Callable[[], Response]
"""Blocking work that produces a response; the ASGI app runs it in a thread."""

_REASONS: Final[Mapping[int, str]] = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
    415: "Unsupported Media Type", 500: "Internal Server Error", 503: "Service Unavailable",
}

_cleanup_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_cleanup_locks_guard = threading.Lock()


def _cleanup_lock(manager: MemoryManager) -> threading.Lock:
    """One lock per manager, shared by every app serving it: cleanups never pile up."""
    with _cleanup_locks_guard:
        lock = _cleanup_locks.get(manager)
        if lock is None:
            lock = _cleanup_locks[manager] = threading.Lock()
        return lock


def _response(status: int, payload: Any, *, content_type: str = JSON_CONTENT_TYPE,
              extra: Headers = ()) -> Response:
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    headers = (("content-type", content_type), ("content-length", str(len(body))),
               ("cache-control", "no-store"), *extra)
    return Response(status, headers, body)


def _error(status: int, message: str, *, extra: Headers = ()) -> Response:
    return _response(status, {"error": message, "status": status}, extra=extra)


def _normalize_prefix(prefix: str) -> str:
    prefix = prefix.strip()
    if not prefix or prefix == "/":
        return ""
    return "/" + prefix.strip("/")


class Endpoints:
    """Routes requests to the payload functions; shared by every adapter.

    `dispatch` answers cheaply-decided requests (404, 405, auth failures, liveness) directly
    and returns blocking ones (anything that samples the stores or cleans up) as a `Work`
    thunk, so an async server runs them off its event loop.
    """

    def __init__(self, manager: Optional[MemoryManager] = None, *, prefix: str = "",
                 token: Optional[str] = None, wall_clock: WallClock = time.time) -> None:
        self.manager = _default_manager(manager)
        self.prefix = _normalize_prefix(prefix)
        resolved = token if token is not None else os.environ.get(TOKEN_ENV)
        self._token: Optional[bytes] = resolved.encode("utf-8") if resolved else None
        self.wall_clock = wall_clock

    def __repr__(self) -> str:
        return (f"<Endpoints prefix={self.prefix!r} "
                f"cleanup={'enabled' if self._token else 'disabled'}>")

    @property
    def cleanup_enabled(self) -> bool:
        return self._token is not None

    def route(self, path: str) -> Optional[str]:
        """The route (a key of `ROUTES`) for a request path, or None when it is not ours."""
        if self.prefix:
            if path != self.prefix and not path.startswith(self.prefix + "/"):
                return None
            path = path[len(self.prefix):]
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        return path if path in ROUTES else None

    def dispatch(self, method: str, path: str, *, authorization: Optional[str] = None,
                 body: Optional[bytes] = b"", content_type: Optional[str] = None,
                 accept: Optional[str] = None) -> Union[Response, Work]:
        """Answer one request, or return the blocking `Work` that will.

        `body` is None when the request's body was over `MAX_BODY_BYTES` and left unread; it is
        answered 413 only after authorization, like any other body problem.
        """
        route = self.route(path)
        if route is None:
            return _error(404, "not found")
        return self.dispatch_route(route, method, authorization=authorization, body=body,
                                   content_type=content_type, accept=accept)

    def dispatch_route(self, route: str, method: str, *, authorization: Optional[str] = None,
                       body: Optional[bytes] = b"", content_type: Optional[str] = None,
                       accept: Optional[str] = None) -> Union[Response, Work]:
        """Like `dispatch` for an already-routed request (the framework adapters route)."""
        method = method.upper()
        allowed = ROUTES[route]
        if method not in allowed:
            return _error(405, f"method {method} not allowed",
                          extra=(("allow", ", ".join(allowed)),))
        head = method == "HEAD"
        if route == "/health/live":
            status, payload = live_payload(self.manager, wall_clock=self.wall_clock)
            return _head(_response(status, payload, content_type=HEALTH_CONTENT_TYPE), head)
        if route in ("/health", "/health/ready"):
            return lambda: _head(self._health(), head)
        if route == "/memory":
            return lambda: _head(self._memory(), head)
        if route == "/metrics":
            return lambda: _head(self._metrics(accept), head)
        if route == "/memory/dashboard":  # a static page: no sampling, no work
            from memguard._dashboard import page, page_headers

            return _head(Response(200, page_headers(), page()), head)
        return self._cleanup_request(authorization, body, content_type)

    def handle(self, method: str, path: str, **request: Any) -> Response:
        """`dispatch` and run its work here (for synchronous servers)."""
        answer = self.dispatch(method, path, **request)
        return answer if isinstance(answer, Response) else run_guarded(answer)

    # -- the routes ------------------------------------------------------------------------

    def _health(self) -> Response:
        status, payload = health_payload(self.manager, wall_clock=self.wall_clock)
        return _response(status, payload, content_type=HEALTH_CONTENT_TYPE)

    def _memory(self) -> Response:
        return _response(200, memory_payload(self.manager, wall_clock=self.wall_clock))

    def _metrics(self, accept: Optional[str]) -> Response:
        body, content_type = metrics_payload(self.manager, accept=accept)
        return Response(200, (("content-type", content_type),
                              ("content-length", str(len(body))),
                              ("cache-control", "no-store")), body)

    def _cleanup_request(self, authorization: Optional[str], body: Optional[bytes],
                         content_type: Optional[str]) -> Union[Response, Work]:
        """Authorize, validate the (optional) body, then hand back the cleanup as work."""
        if self._token is None:
            return _error(403, f"cleanup is disabled: no token configured (token= or "
                               f"{TOKEN_ENV})")
        scheme, _, given = (authorization or "").strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given or " " in given:
            return _error(401, "a bearer token is required: Authorization: Bearer <token>",
                          extra=(("www-authenticate", 'Bearer realm="memguard"'),))
        if not hmac.compare_digest(_header_bytes(given), self._token):
            return _error(403, "invalid token")
        if body is None or len(body) > MAX_BODY_BYTES:
            return _error(413, f"request body over {MAX_BODY_BYTES} bytes")
        if body.strip():
            try:
                parsed = json.loads(body)
            except ValueError:
                return _error(400, "malformed JSON body")
            if not isinstance(parsed, dict):
                return _error(400, "the body must be a JSON object (or empty)")
        return self._cleanup

    def _cleanup(self) -> Response:
        lock = _cleanup_lock(self.manager)
        if not lock.acquire(blocking=False):
            return _error(409, "a cleanup is already running", extra=(("retry-after", "1"),))
        try:
            report = self.manager.emergency_cleanup()
        finally:
            lock.release()
        return _response(200, _json_safe(report.to_dict()))


def _header_bytes(value: str) -> bytes:
    """A header value as the bytes that came over the wire: servers decode headers as
    latin-1 (PEP 3333, ASGI), so encoding back gives them; the token is UTF-8, so a non-ASCII
    token sent as UTF-8 matches. A value that is not latin-1 text (a direct caller) is UTF-8."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _head(response: Response, head: bool) -> Response:
    """HEAD: the GET response's headers (content-length included) without its body."""
    return attrs.evolve(response, body=b"") if head else response


def run_guarded(work: Work) -> Response:
    """Run `work`; an unexpected error becomes a JSON 500 that names only the error type."""
    try:
        return work()
    except Exception as error:
        import logging

        logging.getLogger("memguard").exception("memguard: HTTP endpoint failed")
        return _error(500, f"internal error: {type(error).__name__}")


# --------------------------------------------------------------------------------------------
# ASGI

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _asgi_header(scope: Scope, name: bytes) -> Optional[str]:
    for key, value in scope.get("headers", ()):
        if bytes(key).lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _read_body(receive: Receive, limit: int) -> Optional[bytes]:
    """The request body, or None once it exceeds `limit` (reading stops there)."""
    chunks: list[bytes] = []
    size = 0
    while True:  # bounded: each message carries bytes, and we stop past `limit`
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _asgi_send(send: Send, response: Response) -> None:
    await send({"type": "http.response.start", "status": response.status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                            for k, v in response.headers]})
    await send({"type": "http.response.body", "body": response.body})


async def _asgi_lifespan(receive: Receive, send: Send) -> None:
    """Accept startup and shutdown, so the app also runs standalone under uvicorn."""
    while True:  # bounded by the server: it ends after sending lifespan.shutdown
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def asgi_app(manager: Optional[MemoryManager] = None, *, prefix: str = "",
             token: Optional[str] = None) -> ASGIApp:
    """A plain ASGI 3 application serving the endpoints under `prefix`.

    `token` (default: the ``MEMGUARD_TOKEN`` environment variable, read now) enables
    ``POST /memory/cleanup``. Sampling and cleanups run in the default thread pool
    (`asyncio.to_thread`), so the event loop keeps serving while a cleanup evicts. Under a
    mount (Starlette ``Mount``, uvicorn ``--root-path``) the ``root_path`` is stripped first.
    """
    endpoints = Endpoints(manager, prefix=prefix, token=token)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _asgi_lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets: refuse politely
            await send({"type": "websocket.close", "code": 1003})
            return
        path = str(scope.get("path", "/"))
        root_path = str(scope.get("root_path", "") or "")
        if root_path and (path == root_path or path.startswith(root_path + "/")):
            path = path[len(root_path):] or "/"
        method = str(scope.get("method", "GET"))
        body: Optional[bytes] = b""
        if method.upper() == "POST" and endpoints.route(path) is not None:
            body = await _read_body(receive, MAX_BODY_BYTES)  # None: over the limit
        answer = endpoints.dispatch(
            method, path, authorization=_asgi_header(scope, b"authorization"), body=body,
            content_type=_asgi_header(scope, b"content-type"),
            accept=_asgi_header(scope, b"accept"))
        if not isinstance(answer, Response):
            answer = await asyncio.to_thread(run_guarded, answer)
        await _asgi_send(send, answer)

    app.endpoints = endpoints  # type: ignore[attr-defined]
    return app


# --------------------------------------------------------------------------------------------
# WSGI

WSGIApp = Callable[["WSGIEnvironment", "StartResponse"], Iterable[bytes]]


def _wsgi_body(environ: WSGIEnvironment) -> Optional[bytes]:
    """The request body (bounded by `MAX_BODY_BYTES`; None when larger)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES:
        return None
    if length <= 0:
        return b""
    data: bytes = environ["wsgi.input"].read(length)
    return data


def wsgi_app(manager: Optional[MemoryManager] = None, *, prefix: str = "",
             token: Optional[str] = None) -> WSGIApp:
    """A plain WSGI (PEP 3333) application serving the endpoints under `prefix`.

    Routing uses ``PATH_INFO``, so under a dispatcher (``SCRIPT_NAME`` set) paths are relative
    to the mount point already. `token` as in `asgi_app`.
    """
    endpoints = Endpoints(manager, prefix=prefix, token=token)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "/")
        method = str(environ.get("REQUEST_METHOD", "GET"))
        body: Optional[bytes] = b""
        if method.upper() == "POST" and endpoints.route(path) is not None:
            body = _wsgi_body(environ)  # None: over the limit
        response = endpoints.handle(
            method, path, authorization=environ.get("HTTP_AUTHORIZATION"), body=body,
            content_type=environ.get("CONTENT_TYPE"), accept=environ.get("HTTP_ACCEPT"))
        start_response(f"{response.status} {_REASONS.get(response.status, '')}".rstrip(),
                       list(response.headers))
        return [response.body]

    app.endpoints = endpoints  # type: ignore[attr-defined]
    return app
