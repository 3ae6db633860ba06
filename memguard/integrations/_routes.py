"""The shadowing check the framework adapters share: memguard never takes an app's path."""

from __future__ import annotations

from collections.abc import Iterable

from memguard.errors import RouteConflictError
from memguard.web.payloads import ROUTES

__all__ = ["check_routes", "memguard_paths"]


def memguard_paths(prefix: str) -> dict[str, str]:
    """Full path (under `prefix`, no trailing slash) -> memguard route."""
    base = "/" + prefix.strip("/") if prefix.strip("/") else ""
    return {base + route: route for route in ROUTES}


def check_routes(framework: str, prefix: str, existing: Iterable[tuple[str, str]]) -> None:
    """Raise `RouteConflictError` when one of the app's routes (path, handler name) is a path
    memguard would serve under `prefix`: the first registration would win silently, either
    hiding the app's own endpoint or memguard's."""
    ours = memguard_paths(prefix)
    clashes = sorted({(path.rstrip("/") or "/", handler) for path, handler in existing
                      if (path.rstrip("/") or "/") in ours})
    if clashes:
        listed = ", ".join(f"{path} ({handler})" for path, handler in clashes)
        base = "/" + prefix.strip("/") if prefix.strip("/") else ""
        suggestion = base + "/memguard"
        raise RouteConflictError(
            f"{framework}: the app already serves {listed}; memguard will not shadow it. "
            f"Mount memguard's endpoints under a prefix, e.g. prefix={suggestion!r} "
            f"(serving {suggestion}/health, {suggestion}/memory, ...)")


#: Seconds a client is told to wait (`Retry-After`) when a Redis store is unreachable: about
#: how long a Redis restart or failover takes, and the store's retry window for `stats()`.
REDIS_RETRY_AFTER = 5


def redis_unavailable_body(error: BaseException) -> dict[str, str]:
    """The JSON body of the 503 an app answers when a Redis store could not be reached."""
    return {"error": "service unavailable", "reason": "redis unavailable",
            "detail": str(error)}
