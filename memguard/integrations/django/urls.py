"""``path("ops/", include("memguard.integrations.django.urls"))`` serves the memguard
routes under ``/ops/`` (``/ops/health``, ``/ops/memory``, ...); URL names ``memguard:health``,
``memguard:memory``, ``memguard:memory_cleanup`` ..."""

from __future__ import annotations

from django.urls import URLPattern, path

from memguard.integrations.django.views import view
from memguard.web.payloads import ROUTES

__all__ = ["app_name", "urlpatterns"]

app_name = "memguard"

urlpatterns: list[URLPattern] = [
    path(route.lstrip("/"), view(route), name=route.strip("/").replace("/", "_"))
    for route in ROUTES
]
