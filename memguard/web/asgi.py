"""The endpoints as an ASGI app."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, MutableMapping
from typing import TYPE_CHECKING, Any, Callable, Optional

from memguard.web.endpoints import Endpoints, Response, run_guarded
from memguard.web.payloads import MAX_BODY_BYTES

if TYPE_CHECKING:
    from memguard.manager import MemoryManager



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
