"""A Django system check (``manage.py check``, ``runserver``, ``migrate``): every memguard
path must resolve to memguard's view; an app route matched first at the same path (its own
``/health``) would shadow memguard silently, so it is reported as ``memguard.E001``."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, register
from django.urls import NoReverseMatch, Resolver404, resolve, reverse

from memguard.web.payloads import ROUTES

__all__ = ["check_routes"]


def check_routes(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """``memguard.E001`` for each memguard route an earlier URL pattern takes."""
    errors: list[Error] = []
    for route in ROUTES:
        name = "memguard:" + route.strip("/").replace("/", "_")
        try:
            path = reverse(name)
        except NoReverseMatch:  # memguard's URLs are not included: nothing to shadow
            return []
        try:
            match = resolve(path)
        except Resolver404:  # pragma: no cover - reverse() found it, so it resolves
            continue
        if getattr(match.func, "memguard_route", None) != route:
            errors.append(Error(
                f"{path} is served by {match.func.__module__}.{match.func.__name__}, "
                f"listed before memguard's URLs: memguard's {route} is shadowed",
                hint="include memguard.integrations.django.urls under a prefix of its own, "
                     "e.g. path('memguard/', include('memguard.integrations.django.urls'))",
                id="memguard.E001"))
    return errors


register(check_routes, Tags.urls)
