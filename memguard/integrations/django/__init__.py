"""Django adapter: an app (``"memguard.integrations.django"`` in ``INSTALLED_APPS``) whose
AppConfig starts the monitor in each process, and URLs serving the memguard endpoints::

    # settings.py
    INSTALLED_APPS = [..., "memguard.integrations.django"]
    MEMGUARD = {"policy": "default", "token": None, "start": True}   # all optional

    # urls.py
    urlpatterns = [..., path("ops/", include("memguard.integrations.django.urls"))]

The views answer through `memguard.web.endpoints.Endpoints`, like every other adapter
(docs/http.md).
"""

from __future__ import annotations

from memguard.integrations._extras import missing_extra

try:
    import django as _django  # noqa: F401 (only: is Django installed?)
except ImportError as _error:  # pragma: no cover - exercised in a subprocess without Django
    raise missing_extra("django", _error) from _error

__all__: list[str] = []
