"""The framework-free core: routes, tokens and responses, shared by the ASGI and WSGI apps."""

from __future__ import annotations

import hmac
import json
import os
import threading
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Final, Optional, Union

import attrs

from memguard.policy.options import ENV_TOKEN as TOKEN_ENV
from memguard.web.payloads import (
    HEALTH_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    MAX_BODY_BYTES,
    ROUTES,
    Headers,
    WallClock,
    _default_manager,
    _json_safe,
    health_payload,
    live_payload,
    memory_payload,
    metrics_payload,
    snapshot_collector,
)
from memguard.web.prometheus import serve_every_worker

if TYPE_CHECKING:
    from memguard.manager import MemoryManager




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


def _after_fork_in_child() -> None:
    """A cleanup lock held at the fork (a request being served) would answer 409 forever in
    the child: the child starts with none."""
    global _cleanup_locks_guard
    _cleanup_locks_guard = threading.Lock()
    _cleanup_locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
        # Under `uvicorn --workers N` (no server hook of ours runs there), this is where each
        # worker joins its siblings' metrics, as the app is loaded.
        serve_every_worker(snapshot_collector(self.manager))

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
            from memguard.web.dashboard import page, page_headers

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
