"""Flask adapter: ``init_app(app)`` registers the memguard endpoints as a Blueprint.

    from flask import Flask
    from memguard.integrations.flask import init_app

    app = Flask(__name__)
    init_app(app, prefix="/ops")   # GET /ops/health, /ops/memory, /ops/metrics ...

The routes answer every method so that a wrong one gets memguard's JSON 405 (with ``Allow``)
rather than Flask's HTML page; paths that are not memguard's stay the app's own (its 404).
The monitor is started here (idempotent, so once per process); under gunicorn each worker
imports the app after the fork, or the `memguard.integrations.gunicorn` hooks start it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Final, Optional

from memguard.errors import RedisUnavailable
from memguard.integrations._extras import missing_extra
from memguard.integrations._routes import (
    REDIS_RETRY_AFTER,
    check_routes,
    redis_unavailable_body,
)

try:
    from flask import Blueprint, Flask, request
    from flask import Response as FlaskResponse
except ImportError as _error:  # pragma: no cover - exercised in a subprocess without Flask
    raise missing_extra("flask", _error) from _error

from memguard.web.endpoints import Endpoints, Response, run_guarded
from memguard.web.payloads import MAX_BODY_BYTES, ROUTES

if TYPE_CHECKING:
    from memguard.manager import MemoryManager

__all__ = ["EXTENSION_KEY", "init_app", "redis_unavailable_handler"]

EXTENSION_KEY: Final = "memguard"
"""``app.extensions[EXTENSION_KEY]`` holds the `memguard.web.endpoints.Endpoints` serving
the app."""

ALL_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def init_app(app: Flask, manager: Optional[MemoryManager] = None, *, prefix: str = "",
             token: Optional[str] = None, start: bool = True,
             redis_errors: bool = True) -> Blueprint:
    """Serve the memguard endpoints from `app` under `prefix` and start the monitor.

    `token` (default: ``MEMGUARD_TOKEN``) enables ``POST /memory/cleanup``; `start=False`
    leaves the monitor to you (for example to the gunicorn hooks). Returns the registered
    Blueprint, named ``memguard``.

    Unless `redis_errors=False` (or the app has its own handler for it), a
    `memguard.errors.RedisUnavailable` raised by any view of the app (a Redis store that
    cannot be reached) answers 503 with ``Retry-After`` and a JSON body, not a 500.

    Raises `memguard.errors.RouteConflictError` when the app already has a route at one of
    memguard's paths (its own ``/health``): pass a `prefix` then. Call it after the app's
    own routes are registered; a route the app adds later at the same path is not checked.
    """
    check_routes("Flask", prefix, ((rule.rule, rule.endpoint) for rule in app.url_map.iter_rules()
                                   if not rule.endpoint.startswith("memguard.")))
    endpoints = Endpoints(manager, token=token)
    blueprint = Blueprint("memguard", __name__, url_prefix=prefix.rstrip("/") or None)
    for route in ROUTES:
        name = route.strip("/").replace("/", "_")
        blueprint.add_url_rule(route, endpoint=name, view_func=_view(endpoints, route),
                               methods=list(ALL_METHODS), provide_automatic_options=False)
    app.register_blueprint(blueprint)
    app.extensions[EXTENSION_KEY] = endpoints
    handlers = app.error_handler_spec.get(None, {}).get(None, {})
    if redis_errors and RedisUnavailable not in handlers:
        app.register_error_handler(RedisUnavailable, redis_unavailable_handler)
    if start:
        endpoints.manager.start()
    return blueprint


def _view(endpoints: Endpoints, route: str) -> Callable[[], FlaskResponse]:
    def view() -> FlaskResponse:
        body: Optional[bytes] = b""
        if request.method == "POST" and "POST" in ROUTES[route]:
            too_large = (request.content_length or 0) > MAX_BODY_BYTES
            body = None if too_large else request.get_data(cache=False)
        answer = endpoints.dispatch_route(
            route, request.method, authorization=request.headers.get("Authorization"),
            body=body, content_type=request.content_type,
            accept=request.headers.get("Accept"))
        return _to_flask(answer if isinstance(answer, Response) else run_guarded(answer))

    view.__name__ = f"memguard_{route.strip('/').replace('/', '_')}"
    return view


def redis_unavailable_handler(error: Exception) -> FlaskResponse:
    """503 with ``Retry-After`` for a Redis store that could not be reached."""
    return FlaskResponse(json.dumps(redis_unavailable_body(error)), status=503,
                         headers={"Retry-After": str(REDIS_RETRY_AFTER)},
                         mimetype="application/json")


def _to_flask(response: Response) -> FlaskResponse:
    headers: list[tuple[str, Any]] = [(k, v) for k, v in response.headers
                                      if k.lower() != "content-length"]
    result = FlaskResponse(response.body, status=response.status, headers=headers)
    if response.body == b"" and (length := response.header("content-length")):
        result.headers["Content-Length"] = length  # HEAD: the GET body's length
    return result
