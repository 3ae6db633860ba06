"""The Django adapter: Django's test client in-process, and gunicorn serving a tiny Django
project (tests/integrations/django_site) with two workers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from memguard.web.payloads import HEALTH_CONTENT_TYPE, ROUTES

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TOKEN = "django-token-3c1f"


@pytest.fixture(scope="module")
def django_client() -> Iterator[Any]:
    """Django set up once for this process (settings are process-wide), the monitor not
    started here (the gunicorn test covers the AppConfig starting it)."""
    os.environ.update(DJANGO_SETTINGS_MODULE="django_site.settings", DJANGO_SITE_START="0",
                      DJANGO_SITE_TOKEN=TOKEN)
    import django
    from django.test import Client

    django.setup()
    yield Client()


def test_every_route_is_served_under_the_included_prefix(django_client: Any) -> None:
    health = django_client.get("/ops/health")
    assert health.status_code == 200
    assert health["Content-Type"] == HEALTH_CONTENT_TYPE
    body = health.json()
    assert body["status"] in ("pass", "warn") and body["pid"] == os.getpid()
    assert "memory:utilization" in body["checks"]
    assert django_client.get("/ops/health/live").json()["description"] == "memguard liveness"
    assert django_client.get("/ops/memory").json()["pid"] == os.getpid()
    assert b"memguard_memory_usage_bytes" in django_client.get("/ops/metrics").content
    assert django_client.get("/own").json()["owner"] == "app"
    assert django_client.get("/health").status_code == 404  # only under the prefix


def test_url_names_reverse(django_client: Any) -> None:
    from django.urls import reverse

    for route in ROUTES:
        assert reverse("memguard:" + route.strip("/").replace("/", "_")) == "/ops" + route


def test_wrong_method_is_memguard_json_405(django_client: Any) -> None:
    response = django_client.delete("/ops/memory")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response.json()["status"] == 405


def test_cleanup_takes_the_bearer_token_not_a_csrf_cookie(django_client: Any) -> None:
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/ops/memory/cleanup").status_code == 401
    assert strict.post("/ops/memory/cleanup",
                       HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    report = strict.post("/ops/memory/cleanup", data=b"", content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert report.status_code == 200, report.content
    assert report.json()["kind"] == "emergency"


def test_system_check_reports_a_shadowed_route(django_client: Any) -> None:
    from django.core import checks
    from django.test import override_settings

    assert [e for e in checks.run_checks() if e.id.startswith("memguard")] == []
    with override_settings(ROOT_URLCONF="django_site.shadowed_urls"):
        errors = [e for e in checks.run_checks() if e.id == "memguard.E001"]
    assert len(errors) == 1
    assert "/health is served by django_site.shadowed_urls.health" in errors[0].msg
    assert "include memguard.integrations.django.urls under a prefix" in errors[0].hint


def test_memguard_setting_is_validated(django_client: Any) -> None:
    from django.test import override_settings

    from memguard.errors import MemguardError
    from memguard.integrations.django.apps import options

    with override_settings(MEMGUARD={"polcy": "default"}), \
            pytest.raises(MemguardError, match=r"unknown key\(s\) polcy; allowed: policy"):
        options()


# per-worker stays in `make test`: the fast real-server case of the Django surface.
@pytest.mark.parametrize("preload", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["per-worker", "preload"])
def test_gunicorn_serves_django_with_a_monitor_in_each_worker(tmp_path: Path,
                                                              preload: bool) -> None:
    """The AppConfig starts the monitor in each worker: by importing the app after the fork,
    or (``--preload``) in the master, the monitor then restarting in each forked worker."""
    from acceptance.test_servers import free_port, gunicorn_argv

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMGUARD_", "DJANGO"))}
    env.update(PYTHONPATH=f"{HERE}{os.pathsep}{ROOT}", PYTHONUNBUFFERED="1",
               DJANGO_SETTINGS_MODULE="django_site.settings", DJANGO_SITE_TOKEN=TOKEN)
    argv = gunicorn_argv("--workers", "2", "--bind", f"127.0.0.1:{port}",
                         *(["--preload"] if preload else []), "django_site.wsgi")
    with _serve_ops(argv, port, env, tmp_path / "django.log") as server:
        workers: set[int] = set()
        for _ in range(100):  # bounded: the arbiter forks its workers one after the other
            workers = {w.pid for w in psutil.Process(server.process.pid).children()}
            if len(workers) == 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2
        seen: dict[int, bool] = {}
        for _ in range(60):  # fresh connections until both workers answered (bounded)
            memory = httpx.get(f"{server.url}/ops/memory", timeout=10).json()
            seen[memory["pid"]] = memory["monitoring"]
            if len(seen) == 2:
                break
        assert set(seen) == workers, server.log()
        assert all(seen.values()), seen
        health = httpx.get(f"{server.url}/ops/health", timeout=10)
        assert health.json()["pid"] in workers
        cleanup = httpx.post(f"{server.url}/ops/memory/cleanup", timeout=30,
                             headers={"Authorization": f"Bearer {TOKEN}"})
        assert cleanup.status_code == 200, cleanup.text
        assert httpx.get(f"{server.url}/own", timeout=10).json()["owner"] == "app"


@contextlib.contextmanager
def _serve_ops(argv: list[str], port: int, env: dict[str, str], log: Path) -> Iterator[Any]:
    """Like ``serve`` in the acceptance tests, awaiting readiness at /ops/health/live."""
    from acceptance.test_servers import Server

    server = Server("gunicorn-django", argv, port, env, log)
    try:
        url = server.url
        server.url = f"{url}/ops"
        server.wait_ready()
        server.url = url
        yield server
    finally:
        server.stop()
