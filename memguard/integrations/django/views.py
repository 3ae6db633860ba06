"""One Django view per memguard route, answering through `memguard.web.endpoints.Endpoints`."""

from __future__ import annotations

import threading
from typing import Callable, Optional

from django.http import HttpRequest, HttpResponse

from memguard.web.endpoints import Endpoints, Response, run_guarded
from memguard.web.payloads import MAX_BODY_BYTES, ROUTES

__all__ = ["endpoints", "view"]

_lock = threading.Lock()
_endpoints: Optional[Endpoints] = None


def endpoints() -> Endpoints:
    """This process's `Endpoints` over `memguard.manager`, built on first use (token from
    ``settings.MEMGUARD["token"]``, else ``MEMGUARD_TOKEN``)."""
    global _endpoints
    with _lock:
        if _endpoints is None:
            from memguard.integrations.django.apps import options

            _endpoints = Endpoints(token=options()["token"])
        return _endpoints


def view(route: str) -> Callable[[HttpRequest], HttpResponse]:
    """The view serving `route` (a key of `memguard.web.payloads.ROUTES`); every method reaches it,
    so a wrong one gets memguard's JSON 405. CSRF-exempt: the cleanup takes a bearer token,
    not a cookie."""

    def memguard_view(request: HttpRequest) -> HttpResponse:
        body: Optional[bytes] = b""
        if request.method == "POST" and "POST" in ROUTES[route]:
            too_large = int(request.META.get("CONTENT_LENGTH") or 0) > MAX_BODY_BYTES
            body = None if too_large else request.body
        answer = endpoints().dispatch_route(
            route, request.method or "GET",
            authorization=request.headers.get("Authorization"), body=body,
            content_type=request.headers.get("Content-Type"),
            accept=request.headers.get("Accept"))
        return _to_django(answer if isinstance(answer, Response) else run_guarded(answer))

    memguard_view.__name__ = "memguard_" + route.strip("/").replace("/", "_")
    memguard_view.memguard_route = route  # type: ignore[attr-defined]
    memguard_view.csrf_exempt = True  # type: ignore[attr-defined]  # what @csrf_exempt sets
    return memguard_view


def _to_django(response: Response) -> HttpResponse:
    result = HttpResponse(response.body, status=response.status)
    for key, value in response.headers:
        result[key] = value
    return result
