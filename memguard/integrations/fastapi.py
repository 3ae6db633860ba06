"""FastAPI / Starlette adapter: ``router()`` returns an ``APIRouter`` serving the endpoints.

    from fastapi import FastAPI
    from memguard.integrations.fastapi import router

    app = FastAPI()
    app.include_router(router(), prefix="/ops")   # GET /ops/health, /ops/memory ...

The documented methods appear in the OpenAPI schema; every other method reaches memguard too
(hidden from the schema) and gets its JSON 405 with ``Allow``. Sampling and cleanups run in
Starlette's thread pool so the event loop keeps serving. A plain Starlette app can mount
`memguard.web.asgi.asgi_app` instead (``Mount("/ops", app=asgi_app())``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Optional

from memguard.errors import RedisUnavailable
from memguard.integrations._extras import missing_extra
from memguard.integrations._routes import (
    REDIS_RETRY_AFTER,
    check_routes,
    redis_unavailable_body,
)

try:
    from fastapi import APIRouter, FastAPI, Request
    from fastapi.responses import Response as StarletteResponse
    from starlette.concurrency import run_in_threadpool
except ImportError as _error:  # pragma: no cover - exercised in a subprocess without FastAPI
    raise missing_extra("fastapi", _error) from _error

from memguard.web.endpoints import Endpoints, Response, run_guarded
from memguard.web.payloads import MAX_BODY_BYTES, ROUTES

if TYPE_CHECKING:
    from memguard.manager import MemoryManager

__all__ = ["init_app", "redis_unavailable_handler", "router"]

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

_SUMMARIES = {
    "/health": "Memory health (application/health+json); 503 at critical",
    "/health/ready": "Readiness: same as /health",
    "/health/live": "Liveness: 503 once a started monitor stopped running",
    "/memory": "Memory statistics: sample, thresholds, level, stores, cleanups",
    "/memory/cleanup": "Run an emergency cleanup (bearer token required)",
    "/memory/dashboard": "Live dashboard (HTML) polling /memory",
    "/metrics": "Prometheus metrics",
}

Endpoint = Callable[[Request], Coroutine[Any, Any, StarletteResponse]]


def router(manager: Optional[MemoryManager] = None, *, token: Optional[str] = None,
           start: bool = True) -> APIRouter:
    """An ``APIRouter`` with the memguard endpoints; mount it with ``include_router``.

    `token` (default: ``MEMGUARD_TOKEN``) enables ``POST /memory/cleanup``. The monitor is
    started now (idempotent: once per process) unless `start=False`.
    """
    endpoints = Endpoints(manager, token=token)
    api = APIRouter(tags=["memguard"])
    for route, methods in ROUTES.items():
        endpoint = _endpoint(endpoints, route)
        name = "memguard_" + route.strip("/").replace("/", "_")
        api.add_api_route(route, endpoint, methods=[m for m in methods if m != "HEAD"],
                          name=name, summary=_SUMMARIES[route], response_class=StarletteResponse)
        others = [m for m in ALL_METHODS if m not in methods or m == "HEAD"]
        api.add_api_route(route, endpoint, methods=others, name=name + "_other",
                          include_in_schema=False, response_class=StarletteResponse)
    if start:
        endpoints.manager.start()
    return api


def init_app(app: FastAPI, manager: Optional[MemoryManager] = None, *, prefix: str = "",
             token: Optional[str] = None, start: bool = True,
             redis_errors: bool = True) -> APIRouter:
    """``app.include_router(router(...), prefix=prefix)``, after checking that no route of
    `app` is at one of memguard's paths.

    Unless `redis_errors=False` (or the app has its own handler for it), a
    `memguard.errors.RedisUnavailable` raised by any endpoint of the app answers 503 with
    ``Retry-After`` and a JSON body, not a 500. (A router alone cannot register exception
    handlers: with ``include_router(router())`` add
    ``app.add_exception_handler(RedisUnavailable, redis_unavailable_handler)``.)

    Raises `memguard.errors.RouteConflictError` naming the app's route and suggesting a
    `prefix` (``include_router`` itself would add the duplicate silently and the first route
    registered would win). Returns the router.
    """
    base = "/" + prefix.strip("/") if prefix.strip("/") else ""
    check_routes("FastAPI", base, ((str(getattr(route, "path", "")),
                                    str(getattr(route, "name", route)))
                                   for route in app.routes))
    api = router(manager, token=token, start=start)
    app.include_router(api, prefix=base)
    if redis_errors and RedisUnavailable not in app.exception_handlers:
        app.add_exception_handler(RedisUnavailable, redis_unavailable_handler)
    return api


async def redis_unavailable_handler(request: Request, error: Exception) -> StarletteResponse:
    """503 with ``Retry-After`` for a Redis store that could not be reached."""
    return StarletteResponse(json.dumps(redis_unavailable_body(error)), status_code=503,
                             headers={"Retry-After": str(REDIS_RETRY_AFTER)},
                             media_type="application/json")


def _endpoint(endpoints: Endpoints, route: str) -> Endpoint:
    async def endpoint(request: Request) -> StarletteResponse:
        body: Optional[bytes] = b""
        if request.method == "POST" and "POST" in ROUTES[route]:
            body = await _read_body(request)  # None: over the limit
        answer = endpoints.dispatch_route(
            route, request.method, authorization=request.headers.get("authorization"),
            body=body, content_type=request.headers.get("content-type"),
            accept=request.headers.get("accept"))
        if not isinstance(answer, Response):
            answer = await run_in_threadpool(run_guarded, answer)
        return _to_starlette(answer)

    endpoint.__name__ = "memguard_" + route.strip("/").replace("/", "_")
    return endpoint


async def _read_body(request: Request) -> Optional[bytes]:
    """The body, or None once it exceeds `MAX_BODY_BYTES` (reading stops there)."""
    try:
        if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            return None
    except ValueError:
        pass
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # bounded: stops past MAX_BODY_BYTES
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _to_starlette(response: Response) -> StarletteResponse:
    result = StarletteResponse(response.body, status_code=response.status)
    for key, value in response.headers:
        result.headers[key] = value
    return result
