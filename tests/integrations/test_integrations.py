"""The Flask, FastAPI and gunicorn adapters, in-process: routes, methods, monitor start, recycle."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from memguard import MemoryManager, managed_store
from memguard.testing import FakeClock, FakeProbe
from memguard.web.payloads import HEALTH_CONTENT_TYPE, ROUTES

TOKEN = "integration-token"
SECRET = "integration-SECRET-91b2"


@pytest.fixture
def probe() -> FakeProbe:
    return FakeProbe("100MB", limit="512MB")


@pytest.fixture
def mgr(probe: FakeProbe) -> Iterator[MemoryManager]:
    manager = MemoryManager(clock=FakeClock(0.0), probe=probe)
    manager.load_policy('[memory]\nlimit = "512MB"\nwarning = "400MB"\nemergency = "480MB"\n'
                        'emergency_target = "380MB"\ncritical = "600MB"\n'
                        'check_interval = "1h"\n')
    yield manager
    manager.stop()


@pytest.fixture
def jobs(mgr: MemoryManager) -> Any:
    @managed_store(name="concept", manager=mgr)
    class ConceptJobs(dict):  # type: ignore[type-arg]
        pass

    store = ConceptJobs()
    for i in range(4):
        store[f"c{i}"] = {"status": "done", "result": SECRET * 100}
    return store


# --------------------------------------------------------------------------------------------
# Flask


@pytest.fixture
def flask_client(mgr: MemoryManager) -> Any:
    from flask import Flask

    from memguard.integrations.flask import init_app

    app = Flask("t")

    @app.get("/own")
    def own() -> str:
        return "own route"

    init_app(app, mgr, prefix="/ops", token=TOKEN, start=False)
    return app.test_client()


def test_flask_serves_every_route_under_the_prefix(flask_client: Any, jobs: Any) -> None:
    health = flask_client.get("/ops/health")
    assert health.status_code == 200
    assert health.headers["content-type"] == HEALTH_CONTENT_TYPE
    # start=False and nothing started the monitor: warn, saying so (never a false "pass")
    assert health.get_json(force=True)["status"] == "warn"
    assert "monitor not running: never started" in health.get_json(force=True)["output"]
    assert flask_client.get("/ops/health/ready").status_code == 200
    assert flask_client.get("/ops/health/live").status_code == 200
    memory = flask_client.get("/ops/memory").get_json()
    assert memory["stores"][0]["jobs"] == 4
    assert b"memguard_store_jobs" in flask_client.get("/ops/metrics").data
    assert flask_client.get("/own").data == b"own route"  # the app's routes are untouched


def test_flask_wrong_method_is_memguard_json_405(flask_client: Any) -> None:
    for method, path in (("post", "/ops/health"), ("get", "/ops/memory/cleanup"),
                         ("delete", "/ops/metrics"), ("options", "/ops/memory")):
        response = getattr(flask_client, method)(path)
        assert response.status_code == 405
        assert response.get_json()["status"] == 405
        assert {m.strip() for m in response.headers["allow"].split(",")} == set(
            ROUTES[path.removeprefix("/ops")])


def test_flask_cleanup_auth_and_body(flask_client: Any, jobs: Any, probe: FakeProbe) -> None:
    assert flask_client.post("/ops/memory/cleanup").status_code == 401
    assert flask_client.post("/ops/memory/cleanup",
                             headers={"Authorization": "Bearer nope"}).status_code == 403
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bad = flask_client.post("/ops/memory/cleanup", headers=auth, data=b"{oops",
                            content_type="application/json")
    assert bad.status_code == 400
    huge = b"x" * 70_000
    assert flask_client.post("/ops/memory/cleanup", data=huge).status_code == 401
    assert flask_client.post("/ops/memory/cleanup", headers=auth, data=huge).status_code == 413
    assert len(jobs) == 4
    probe.set("700MB")
    done = flask_client.post("/ops/memory/cleanup", headers=auth, json={})
    assert done.status_code == 200
    assert done.get_json()["evicted"] == 4
    assert SECRET not in done.get_data(as_text=True)


def test_flask_head_keeps_the_length(flask_client: Any) -> None:
    head = flask_client.head("/ops/memory")
    assert head.status_code == 200
    assert head.data == b""
    assert int(head.headers["content-length"]) > 0


def test_flask_init_app_starts_the_monitor_once(mgr: MemoryManager) -> None:
    from flask import Flask

    from memguard.integrations.flask import EXTENSION_KEY, init_app

    app = Flask("t")
    blueprint = init_app(app, mgr)
    assert blueprint.name == "memguard"
    assert app.extensions[EXTENSION_KEY].manager is mgr
    monitor = mgr.monitor
    assert monitor is not None and monitor.running
    thread = monitor._loop.thread
    init_app(Flask("other"), mgr)  # a second app in the process: same monitor, same thread
    assert mgr.monitor is monitor and monitor._loop.thread is thread
    assert app.test_client().get("/health/live").get_json()["checks"]["memguard:monitor"][0][
        "observedValue"] is True


# --------------------------------------------------------------------------------------------
# FastAPI


@pytest.fixture
def fastapi_app(mgr: MemoryManager) -> Any:
    from fastapi import FastAPI

    from memguard.integrations.fastapi import router

    app = FastAPI()
    app.include_router(router(mgr, token=TOKEN, start=False), prefix="/ops")
    return app


class AsgiClient:
    """A synchronous httpx face over an ASGI app (one event loop per request)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                         base_url="http://testserver") as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(go())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("HEAD", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


@pytest.fixture
def fastapi_client(fastapi_app: Any) -> AsgiClient:
    return AsgiClient(fastapi_app)


def test_fastapi_serves_every_route_under_the_prefix(fastapi_client: Any, jobs: Any,
                                                      probe: FakeProbe) -> None:
    health = fastapi_client.get("/ops/health")
    assert (health.status_code, health.headers["content-type"]) == (200, HEALTH_CONTENT_TYPE)
    probe.set("700MB")
    assert fastapi_client.get("/ops/health/ready").status_code == 503
    assert fastapi_client.get("/ops/health/live").status_code == 200
    assert fastapi_client.get("/ops/memory").json()["level"] == "critical"
    assert "memguard_memory_usage_bytes" in fastapi_client.get("/ops/metrics").text
    head = fastapi_client.head("/ops/memory")
    assert head.status_code == 200 and head.content == b""


def test_fastapi_wrong_method_is_memguard_json_405(fastapi_client: Any) -> None:
    for method, path in (("POST", "/ops/health"), ("GET", "/ops/memory/cleanup"),
                         ("DELETE", "/ops/metrics"), ("PUT", "/ops/health/live")):
        response = fastapi_client.request(method, path)
        assert response.status_code == 405
        assert response.json()["status"] == 405
        assert {m.strip() for m in response.headers["allow"].split(",")} == set(
            ROUTES[path.removeprefix("/ops")])


def test_fastapi_cleanup_auth_and_body(fastapi_client: Any, jobs: Any, probe: FakeProbe) -> None:
    assert fastapi_client.post("/ops/memory/cleanup").status_code == 401
    assert fastapi_client.post("/ops/memory/cleanup",
                               headers={"Authorization": "Bearer nope"}).status_code == 403
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert fastapi_client.post("/ops/memory/cleanup", headers=auth,
                               content=b"[1").status_code == 400
    assert fastapi_client.post("/ops/memory/cleanup", headers=auth,
                               content=b"x" * 70_000).status_code == 413
    assert fastapi_client.post("/ops/memory/cleanup",
                               content=b"x" * 70_000).status_code == 401
    probe.set("700MB")
    done = fastapi_client.post("/ops/memory/cleanup", headers=auth)
    assert done.status_code == 200 and done.json()["evicted"] == 4
    assert SECRET not in done.text


def test_fastapi_schema_lists_only_the_real_methods(fastapi_app: Any) -> None:
    paths = fastapi_app.openapi()["paths"]
    assert set(paths["/ops/health"]) == {"get"}
    assert set(paths["/ops/memory/cleanup"]) == {"post"}
    assert {p for p in paths if p.startswith("/ops")} == {f"/ops{r}" for r in ROUTES}


def test_fastapi_router_starts_the_monitor(mgr: MemoryManager) -> None:
    from memguard.integrations.fastapi import router

    router(mgr)
    assert mgr.monitor is not None and mgr.monitor.running


# --------------------------------------------------------------------------------------------
# gunicorn hooks


def test_gunicorn_post_fork_starts_the_monitor_and_worker_exit_stops_it(
        mgr: MemoryManager) -> None:
    from memguard.integrations.gunicorn import GunicornHooks

    hooks = GunicornHooks(mgr)
    worker = SimpleNamespace(alive=True)
    hooks.post_fork(None, worker)
    monitor = mgr.monitor
    assert monitor is not None and monitor.running
    assert callable(monitor.on_recycle)
    hooks.worker_exit(None, worker)
    assert not monitor.running and not monitor.started


def test_gunicorn_recycle_is_graceful_and_once(mgr: MemoryManager,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from memguard.integrations.gunicorn import GunicornHooks

    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signals.append((pid, sig)))
    hooks = GunicornHooks(mgr)
    worker = SimpleNamespace(alive=True)
    hooks.post_fork(None, worker)
    mgr.monitor.on_recycle()
    mgr.monitor.on_recycle()
    assert worker.alive is False
    assert signals == [(os.getpid(), signal.SIGTERM)]  # gunicorn's "graceful shutdown"
    hooks.worker_exit(None, worker)


def test_gunicorn_recycle_at_critical_through_the_monitor(
        mgr: MemoryManager, probe: FakeProbe) -> None:
    """With ``recycle = true``, a tick at critical calls the hook the gunicorn hooks set."""
    from memguard.integrations.gunicorn import GunicornHooks

    mgr.load_policy('[memory]\nlimit = "512MB"\nwarning = "400MB"\nemergency = "480MB"\n'
                    'emergency_target = "380MB"\ncritical = "600MB"\ncheck_interval = "1h"\n'
                    'recycle = true\n')
    hooks = GunicornHooks(mgr, nudge=False)
    worker = SimpleNamespace(alive=True)
    hooks.post_fork(None, worker)
    hooks.worker_exit(None, worker)  # drive ticks by hand from here
    mgr.monitor.tick()
    assert worker.alive is True
    probe.set("700MB")
    mgr.monitor.tick()
    assert worker.alive is False


def test_gunicorn_module_hooks_use_the_default_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    import memguard
    from memguard.integrations import gunicorn

    started: list[str] = []
    monkeypatch.setattr(memguard.manager, "setup_memory_monitoring",
                        lambda interval=None, announce=True: started.append("start"))
    monkeypatch.setattr(memguard.manager, "stop", lambda: started.append("stop"))
    gunicorn.post_fork(None, SimpleNamespace(alive=True))
    gunicorn.worker_exit(None, SimpleNamespace(alive=True))
    assert started == ["start", "stop"]


def test_gunicorn_hooks_load_the_monitor_in_the_arbiter_not_after_the_fork() -> None:
    """gunicorn reads its configuration (these hooks) in the arbiter; `post_fork` runs in each
    worker before gunicorn sets the worker's signal handlers, so whatever it imports is
    imported once per worker (not shared copy-on-write) and widens the window in which a
    SIGTERM to the worker is lost. In a fresh interpreter: importing the hooks module loads
    the manager and the monitor; starting a worker's monitor then imports nothing."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from memguard.integrations import gunicorn\n"
        "before = set(sys.modules)\n"
        "gunicorn.post_fork(None, type('Worker', (), {'alive': True})())\n"
        "gunicorn.worker_exit(None, None)\n"
        "print(sorted(set(sys.modules) - before))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMGUARD_")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=60, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


# --------------------------------------------------------------------------------------------
# Routes an app already serves are never shadowed


def test_flask_refuses_to_shadow_the_apps_own_health(mgr: MemoryManager) -> None:
    from flask import Flask

    from memguard.errors import RouteConflictError
    from memguard.integrations.flask import init_app

    app = Flask("own-health")

    @app.get("/health/")
    def health() -> str:
        return "the app's own health"

    with pytest.raises(RouteConflictError) as caught:
        init_app(app, mgr, start=False)
    message = str(caught.value)
    assert "Flask: the app already serves /health (health)" in message
    assert "prefix='/memguard'" in message
    assert "memguard" not in app.blueprints  # nothing was registered
    init_app(app, mgr, prefix="/memguard", start=False)  # the suggested prefix works
    client = app.test_client()
    assert client.get("/health/").text == "the app's own health"
    assert client.get("/memguard/health").json["status"] == "warn"  # start=False: not running


def test_flask_under_a_prefix_checks_the_prefixed_paths(mgr: MemoryManager) -> None:
    from flask import Flask

    from memguard.errors import RouteConflictError
    from memguard.integrations.flask import init_app

    app = Flask("own-ops")
    app.add_url_rule("/ops/metrics", "metrics", lambda: "app metrics")
    app.add_url_rule("/health", "health", lambda: "app health")
    with pytest.raises(RouteConflictError, match=r"/ops/metrics \(metrics\).*'/ops/memguard'"):
        init_app(app, mgr, prefix="/ops", start=False)


def test_fastapi_init_app_refuses_to_shadow_and_mounts_otherwise(mgr: MemoryManager) -> None:
    from fastapi import FastAPI

    from memguard.errors import RouteConflictError
    from memguard.integrations.fastapi import init_app

    app = FastAPI()

    @app.get("/memory")
    def app_memory() -> dict[str, str]:
        return {"owner": "app"}

    with pytest.raises(RouteConflictError, match=r"FastAPI: the app already serves /memory "
                                                 r"\(app_memory\)"):
        init_app(app, mgr, start=False)
    assert not any(getattr(r, "name", "").startswith("memguard") for r in app.routes)
    init_app(app, mgr, prefix="/memguard/", start=False)
    client = AsgiClient(app)
    assert client.get("/memory").json() == {"owner": "app"}
    assert client.get("/memguard/memory").json()["pid"] == os.getpid()


def test_gunicorn_child_exit_drops_a_dead_workers_gauges_and_keeps_its_counters(
        tmp_path: Any) -> None:
    """PROMETHEUS_MULTIPROC_DIR must be set before prometheus-client is imported: a fresh
    interpreter mirrors its figures, then the arbiter's hook runs for its pid."""
    import subprocess
    import sys

    script = (
        "import os\n"
        "from types import SimpleNamespace\n"
        "import memguard\n"
        "from memguard.integrations.gunicorn import child_exit\n"
        "from memguard.web.prometheus import multiprocess_mode, sync\n"
        "from memguard.web.payloads import snapshot_collector\n"
        "assert multiprocess_mode()\n"
        "manager = memguard.MemoryManager()\n"
        "manager.emergency_cleanup()\n"
        "sync(snapshot_collector(manager))\n"
        "before = sorted(os.listdir(os.environ['PROMETHEUS_MULTIPROC_DIR']))\n"
        "child_exit(None, SimpleNamespace(pid=os.getpid()))\n"
        "after = sorted(os.listdir(os.environ['PROMETHEUS_MULTIPROC_DIR']))\n"
        "print(' '.join(before)); print(' '.join(after)); print(os.getpid())\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    before, after, pid = result.stdout.splitlines()
    assert f"gauge_liveall_{pid}.db" in before.split()
    assert f"counter_{pid}.db" in before.split()
    assert after.split() == [f"counter_{pid}.db"]  # its counters stay counted
