"""docs/integrations.md and docs/http.md: their code runs and their payloads are the real ones.

- Every ``python`` block is executed on its own; the ``app`` it builds answers ``/ops/health``.
- Every ``toml`` block loads.
- Each ``json`` block marked ``<!-- response: METHOD PATH -->`` has the shape (the keys, all the
  way down) of what that endpoint returns for the scenario the examples were taken from.
- The metrics table names exactly the families ``/metrics`` can emit.
- The Procfile runs as a real server: see tests/acceptance/test_servers.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import memguard
from memguard import MemoryManager, Policy, managed_store
from memguard.policy.files import bundled_policy_names
from memguard.testing import FakeClock, FakeProbe
from memguard.web.endpoints import Endpoints
from memguard.web.payloads import HEALTH_CONTENT_TYPE

ROOT = Path(__file__).resolve().parents[2]
INTEGRATIONS = ROOT / "docs" / "integrations.md"
HTTP = ROOT / "docs" / "http.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.DOTALL | re.MULTILINE)
RESPONSE = re.compile(r"^<!-- response: (\w+) (\S+) -->\n```json\n(.*?)^```",
                      re.DOTALL | re.MULTILINE)


def blocks(doc: Path, language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(doc.read_text()) if lang == language]


PYTHON_BLOCKS = [(doc.name, i, code) for doc in (INTEGRATIONS, HTTP)
                 for i, code in enumerate(blocks(doc, "python"))]


@pytest.fixture
def default_manager_stopped() -> Iterator[None]:
    """Snippets start the default manager's monitor; stop it again afterwards."""
    yield
    memguard.manager.stop()


def _get(app: Any, path: str) -> httpx.Response:
    if hasattr(app, "wsgi_app"):  # Flask
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as c:
            return c.get(path)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as client:
            return await client.get(path)

    return asyncio.run(go())


@pytest.mark.parametrize(("doc", "index", "code"), PYTHON_BLOCKS,
                         ids=[f"{doc}-{i}" for doc, i, _ in PYTHON_BLOCKS])
def test_python_blocks_run(doc: str, index: int, code: str,
                           default_manager_stopped: None) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_snippet"}
    exec(compile(code, f"{doc} python block {index}", "exec"), namespace)
    if "app" in namespace:
        response = _get(namespace["app"], "/ops/health")
        assert response.status_code == 200
        assert response.headers["content-type"] == HEALTH_CONTENT_TYPE
        assert response.json()["checks"]["memory:utilization"]
    else:  # the gunicorn.conf.py block
        from memguard.integrations import gunicorn

        assert namespace["post_fork"] is gunicorn.post_fork
        assert namespace["worker_exit"] is gunicorn.worker_exit
        assert namespace["post_worker_init"] is gunicorn.post_worker_init
        assert namespace["workers"] >= 2


def test_the_pages_have_the_snippets_the_issue_asks_for() -> None:
    text = INTEGRATIONS.read_text()
    assert len(blocks(INTEGRATIONS, "python")) >= 5
    for needle in ("init_app(app", "include_router(router()",
                   "post_fork, post_worker_init, worker_exit", "MALLOC_ARENA_MAX=2",
                   "log-runtime-metrics", "web: gunicorn"):
        assert needle in text, needle
    policy = re.search(r"MEMGUARD_POLICY=(\S+)", text)
    assert policy is not None and policy.group(1) in bundled_policy_names()
    for command in ("examples/flask_app.py", "examples.fastapi_app:app",
                    "examples/gunicorn.conf.py", "examples.flask_app:app"):
        assert command in text
        assert (ROOT / command.split(":")[0].replace(".", "/").replace("/py", ".py")
                ).with_suffix(".py").is_file() or (ROOT / command).is_file()


@pytest.mark.parametrize("index", range(len(blocks(INTEGRATIONS, "toml"))))
def test_toml_blocks_load(index: int) -> None:
    policy = Policy.from_toml(blocks(INTEGRATIONS, "toml")[index], environ={})
    assert policy.memory.recycle is True


# --------------------------------------------------------------------------------------------
# docs/http.md payloads


@pytest.fixture
def endpoints() -> Iterator[Endpoints]:
    """The scenario behind the examples: a 512MB limit, a `diagram` store with count and
    emergency evictions, one emergency cleanup from 520MB to 420MB, then usage growing to
    430MB (warning)."""
    probe = FakeProbe("400MB", limit="512MB", heap="310MB")
    clock = FakeClock(1000.0)
    manager = MemoryManager(clock=clock, probe=probe)
    manager.load_policy('[memory]\nlimit = "512MB"\nwarning = "400MB"\nwarning_heap = "300MB"\n'
                        'emergency = "500MB"\nemergency_target = "400MB"\ncritical = "600MB"\n'
                        'check_interval = "1h"\n')

    @managed_store(name="diagram", max_jobs=3, manager=manager)
    class DiagramJobs(dict):  # type: ignore[type-arg]
        pass

    store = DiagramJobs()
    for i in range(5):
        store[f"j{i}"] = {"status": "done", "result": "x" * 100_000}
    store["r"] = {"status": "running", "result": None}
    manager.on_evict(lambda event: probe.set("420MB"))  # evicting gives memory back
    manager.get_memory_stats()  # creates the monitor; its ticks are driven here
    manager.monitor.tick()
    probe.set("520MB")
    manager.emergency_cleanup()
    clock.advance(1)
    probe.set("425MB")
    manager.monitor.tick()
    clock.advance(1)
    probe.set("430MB")
    manager.monitor.tick()  # growing since the cleanup: growth and time to the limit known
    # Then running, as in an app (/health warns otherwise): the thread's ticks come at the
    # same instant of the fake clock, at the same usage, and change nothing shown.
    ticks = manager.monitor.ticks
    manager.start()
    while manager.monitor.ticks <= ticks:
        time.sleep(0.01)
    endpoints = Endpoints(manager, token="t")
    endpoints.scenario = SimpleNamespace(probe=probe, store=store)  # type: ignore[attr-defined]
    yield endpoints
    manager.stop()


def shape(value: Any) -> Any:
    """The keys of `value`, recursively (lists by their first item); scalars are None."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


RESPONSES = RESPONSE.findall(HTTP.read_text())


@pytest.mark.parametrize(("method", "path", "documented"), RESPONSES,
                         ids=[f"{m} {p}" for m, p, _ in RESPONSES])
def test_documented_payloads_have_the_real_shape(endpoints: Endpoints, method: str, path: str,
                                                 documented: str) -> None:
    if method == "POST":  # something to clean up
        scenario = endpoints.scenario  # type: ignore[attr-defined]
        scenario.store.update({f"k{i}": {"status": "done", "result": "y" * 100_000}
                               for i in range(2)})
        scenario.probe.set("520MB")
    response = endpoints.handle(method, path, authorization="Bearer t")
    assert response.status == 200
    actual = json.loads(response.body)
    doc = json.loads(documented)
    assert shape(doc) == shape(actual)


def test_every_route_is_documented() -> None:
    text = HTTP.read_text()
    from memguard.web.payloads import ROUTES

    for route, methods in ROUTES.items():
        assert f"`{route}`" in text
        for method in methods:
            assert f"`{method}`" in text


def test_the_metrics_table_is_exactly_what_metrics_emits(endpoints: Endpoints) -> None:
    documented = set(re.findall(r"^\| `(memguard_\w+)` \|", HTTP.read_text(), re.MULTILINE))
    body = endpoints.handle("GET", "/metrics").body.decode()
    emitted = {sample.name for family in text_string_to_metric_families(body)
               for sample in family.samples if sample.name.startswith("memguard_")}
    assert emitted == documented
    standard = {family.name for family in text_string_to_metric_families(body)
                if not family.name.startswith("memguard_")}
    assert {"process_cpu_seconds", "python_gc_collections", "python_info"} <= standard
    for prefix in ("process_*", "python_gc_*", "python_info"):
        assert f"`{prefix}`" in HTTP.read_text()
    assert len(documented) >= 20
