"""The endpoints as a WSGI app."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Callable, Optional

from memguard.web.endpoints import _REASONS, Endpoints
from memguard.web.payloads import MAX_BODY_BYTES

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from memguard.manager import MemoryManager



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
