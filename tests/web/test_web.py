"""memguard.web in-process: the payloads, and the ASGI and WSGI apps through httpx transports.

Every HTTP behaviour is checked against both apps (the `client` fixture is parametrized), on an
isolated manager with a `FakeProbe`, so levels are set by the test rather than by the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from memguard import MemoryManager, managed_store
from memguard.policy.options import ENV_TOKEN as TOKEN_ENV
from memguard.testing import FakeClock, FakeProbe
from memguard.web.asgi import asgi_app
from memguard.web.endpoints import Endpoints, Response
from memguard.web.payloads import (
    HEALTH_CONTENT_TYPE,
    MAX_BODY_BYTES,
    ROUTES,
    health_payload,
    live_payload,
    memory_payload,
    metrics_payload,
)
from memguard.web.wsgi import wsgi_app

SECRET = "tHe-SeCrEt-7f3a9c"
TOKEN = "s3cret-token"


@pytest.fixture
def probe() -> FakeProbe:
    return FakeProbe("100MB", limit="512MB")


@pytest.fixture
def mgr(probe: FakeProbe) -> Iterator[MemoryManager]:
    """A manager with thresholds 400/480/600MB (target 380MB) over a 512MB limit."""
    manager = MemoryManager(clock=FakeClock(1000.0), probe=probe)
    manager.load_policy(
        '[memory]\nlimit = "512MB"\nwarning = "400MB"\nemergency = "480MB"\n'
        'emergency_target = "380MB"\ncritical = "600MB"\n'
    )
    yield manager
    manager.stop()


@pytest.fixture
def store(mgr: MemoryManager) -> Any:
    """A `diagram` store holding done jobs whose results and keys contain SECRET."""

    @managed_store(name="diagram", max_jobs=50, manager=mgr)
    class DiagramJobs(dict):  # type: ignore[type-arg]
        pass

    jobs = DiagramJobs()
    for i in range(6):
        jobs[f"job-{i}"] = {"status": "done", "result": f"{SECRET} " + "x" * 50_000}
    jobs["running"] = {"status": "running", "result": None, "prompt": SECRET}
    return jobs


class Client:
    """A synchronous face over either app: `request(method, path, **httpx kwargs)`."""

    def __init__(self, kind: str, app: Any) -> None:
        self.kind, self.app = kind, app

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self.kind == "wsgi":
            with httpx.Client(transport=httpx.WSGITransport(app=self.app),
                              base_url="http://testserver") as client:
                return client.request(method, path, **kwargs)

        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                         base_url="http://testserver") as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(go())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


AppFactory = Callable[..., Client]


@pytest.fixture(params=["wsgi", "asgi"])
def make_client(request: pytest.FixtureRequest, mgr: MemoryManager) -> AppFactory:
    def make(**options: Any) -> Client:
        factory = wsgi_app if request.param == "wsgi" else asgi_app
        return Client(request.param, factory(mgr, **options))

    return make


@pytest.fixture
def client(make_client: AppFactory) -> Client:
    return make_client(token=TOKEN)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------------------------
# /health


@pytest.mark.parametrize(("usage", "status", "code", "level"), [
    ("100MB", "pass", 200, "ok"),
    ("420MB", "warn", 200, "warning"),
    ("500MB", "warn", 200, "emergency"),
    ("700MB", "fail", 503, "critical"),
])
def test_health_status_follows_the_level(client: Client, mgr: MemoryManager, probe: FakeProbe,
                                         usage: str, status: str, code: int,
                                         level: str) -> None:
    mgr.start()  # /health warns while the monitor is not running
    probe.set(usage)
    for path in ("/health", "/health/ready"):
        response = client.get(path)
        assert response.status_code == code
        assert response.headers["content-type"] == HEALTH_CONTENT_TYPE
        body = response.json()
        assert body["status"] == status
        (check,) = body["checks"]["memory:utilization"]
        assert check["status"] == status
        assert check["level"] == level
        assert check["observedUnit"] == "percent"
        assert check["observedValue"] == pytest.approx(probe.usage / probe.limit * 100, abs=0.01)
        assert check["time"].endswith("Z")
        (usage_check,) = body["checks"]["memory:usage"]
        assert usage_check["observedValue"] == probe.usage
        assert usage_check["thresholds"]["critical"] == 600 * 2**20


def _outputs(payload: Any) -> list[str]:
    """Every ``output`` field of a health payload, top level and checks."""
    found = [payload["output"]] if "output" in payload else []
    for checks in payload["checks"].values():
        found += [check["output"] for check in checks if "output" in check]
    return found


@pytest.mark.parametrize("path", ["/health", "/health/ready", "/health/live"])
def test_health_follows_the_ietf_draft(client: Client, mgr: MemoryManager, probe: FakeProbe,
                                       path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``output`` is omitted on pass (the draft: raw error output for warn and fail only);
    ``version`` is memguard's; ``serviceId`` and ``pid`` name the process that answered."""
    import os

    import memguard

    monkeypatch.setenv("DYNO", "web.3")
    mgr.start()  # /health warns while the monitor is not running
    body = client.get(path).json()
    assert body["status"] == "pass"
    assert _outputs(body) == []
    assert body["version"] == memguard.__version__
    assert body["pid"] == os.getpid()
    assert body["serviceId"] == f"web.3:{os.getpid()}"
    assert body["notes"] and isinstance(body["notes"][0], str)
    if path != "/health/live":
        probe.set("420MB")
        warned = client.get(path).json()
        assert warned["status"] == "warn"
        assert warned["output"].startswith("level warning: usage 420.0MB")
        assert warned["checks"]["memory:utilization"][0]["output"] == warned["output"]
        monkeypatch.delenv("DYNO")
        import socket

        warned = client.get(path).json()
        assert warned["serviceId"] == f"{socket.gethostname()}:{os.getpid()}"


def test_health_without_a_limit_reports_no_percentage(mgr: MemoryManager,
                                                      probe: FakeProbe) -> None:
    probe.limit = None
    mgr.load_policy('[memory]\nlimit = "auto"\nwarning = "400MB"\nemergency = "480MB"\n'
                    'emergency_target = "380MB"\ncritical = "600MB"\n')
    code, payload = health_payload(mgr)
    assert code == 200
    check = payload["checks"]["memory:utilization"][0]
    assert check["observedValue"] is None
    assert check["observedUnit"] == "percent"
    assert payload["checks"]["memory:usage"][0]["observedValue"] == probe.usage


def test_health_fails_with_503_when_the_probe_fails(client: Client, mgr: MemoryManager,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise OSError("cannot read /proc/self/statm")

    monkeypatch.setattr(mgr, "probe", broken)
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert "OSError" in body["output"]
    assert body["checks"]["memory:utilization"][0]["status"] == "fail"


def test_health_warns_when_a_started_monitor_died(mgr: MemoryManager) -> None:
    mgr.get_memory_stats()  # creates the monitor
    monitor = mgr.monitor
    monitor.start()
    assert live_payload(mgr)[0] == 200
    thread = monitor._loop.thread
    monitor._loop.stop_event.set()  # the thread ends while the monitor is still "started"
    monitor._loop.wake()
    thread.join(5)
    assert monitor.started and not monitor.running
    code, payload = health_payload(mgr)
    assert code == 200
    assert payload["status"] == "warn"
    assert payload["checks"]["memguard:monitor"][0]["status"] == "warn"
    assert live_payload(mgr)[0] == 503


# --------------------------------------------------------------------------------------------
# /health/live


def test_live_is_200_before_start_and_while_running_and_503_once_dead(
        client: Client, mgr: MemoryManager, probe: FakeProbe) -> None:
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json()["notes"] == ["monitor not started"]
    assert "output" not in response.json()["checks"]["memguard:monitor"][0]  # pass: no output
    calls = probe.calls
    mgr.monitor = SimpleNamespace(started=True, running=True)
    response = client.get("/health/live")
    assert (response.status_code, response.json()["status"]) == (200, "pass")
    mgr.monitor = SimpleNamespace(started=True, running=False)
    response = client.get("/health/live")
    assert (response.status_code, response.json()["status"]) == (503, "fail")
    assert response.headers["content-type"] == HEALTH_CONTENT_TYPE
    assert probe.calls == calls  # liveness never samples
    mgr.monitor = None


# --------------------------------------------------------------------------------------------
# /memory


def test_memory_reports_stats_without_job_contents(client: Client, store: Any,
                                                   probe: FakeProbe) -> None:
    response = client.get("/memory")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["sample"]["usage"] == probe.usage
    assert body["sample"]["limit"] == 512 * 2**20
    assert body["level"] == "ok"
    assert body["thresholds"]["warning"] == 400 * 2**20
    (diagram,) = body["stores"]
    assert diagram["name"] == "diagram"
    assert diagram["jobs"] == 7
    assert diagram["active"] == 1
    assert diagram["bytes"] > 6 * 50_000
    assert set(body) >= {"recent_cleanups", "growth_per_minute", "time_to_limit",
                         "monitoring", "pid", "time"}
    assert SECRET not in response.text
    assert "job-" not in response.text  # no job ids either


def test_memory_payload_is_json_safe(mgr: MemoryManager, store: Any) -> None:
    payload = memory_payload(mgr)
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload


# --------------------------------------------------------------------------------------------
# /metrics


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_in_base_units(client: Client, store: Any, probe: FakeProbe) -> None:
    probe.set("700MB")
    client.post("/memory/cleanup", headers=bearer())
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = _families(response.text)

    def value(name: str, **labels: str) -> float:
        """The sample's value; every sample names the answering process in ``pid``."""
        for family in families.values():
            for sample in family.samples:
                if sample.name == name and sample.labels == {**labels, "pid": str(os.getpid())}:
                    return float(sample.value)
        raise AssertionError(f"{name}{labels} not in the metrics")

    assert value("memguard_memory_usage_bytes") == 700 * 2**20
    assert value("memguard_memory_limit_bytes") == 512 * 2**20
    assert value("memguard_memory_level", level="critical") == 1
    assert value("memguard_memory_level", level="ok") == 0
    assert value("memguard_memory_severity") == 3
    assert value("memguard_memory_threshold_bytes", threshold="warning") == 400 * 2**20
    assert value("memguard_store_jobs", store="diagram") == 1  # only the running job is left
    assert value("memguard_store_active_jobs", store="diagram") == 1
    assert families["memguard_evictions"].type == "counter"
    assert value("memguard_evictions_total", store="diagram", cause="emergency") == 6
    assert value("memguard_cleanups_total", kind="emergency") == 1
    assert "memguard_reclaimed_bytes" in families
    assert SECRET not in response.text


def test_metrics_label_every_series_with_the_pid_and_add_process_and_gc(
        mgr: MemoryManager, store: Any) -> None:
    """Without PROMETHEUS_MULTIPROC_DIR each series is one process's own (``pid``), so one
    series never goes down when scrapes reach different workers."""
    body, _ = metrics_payload(mgr)
    families = _families(body.decode())
    pids = {s.labels.get("pid") for f in families.values() for s in f.samples}
    assert pids == {str(os.getpid())}
    assert families["process_cpu_seconds"].type == "counter"
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["python_gc_collections"].type == "counter"
    assert "python_info" in families


def test_metrics_speaks_openmetrics_when_asked(mgr: MemoryManager, store: Any) -> None:
    body, content_type = metrics_payload(mgr, accept="application/openmetrics-text")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_metrics_uses_a_fresh_registry_each_call(mgr: MemoryManager, store: Any) -> None:
    first, _ = metrics_payload(mgr)
    second, _ = metrics_payload(mgr)
    assert first.count(b"# TYPE memguard_memory_usage_bytes") == 1
    assert second.count(b"# TYPE memguard_memory_usage_bytes") == 1


def test_cleanup_counters_count_each_cleanup_once(mgr: MemoryManager, store: Any,
                                                  probe: FakeProbe) -> None:
    probe.set("700MB")
    mgr.emergency_cleanup()
    metrics_payload(mgr)
    mgr.clock.advance(60)  # type: ignore[attr-defined]
    mgr.emergency_cleanup()
    body, _ = metrics_payload(mgr)
    body, _ = metrics_payload(mgr)  # scraping again adds nothing
    families = _families(body.decode())
    (sample,) = [s for s in families["memguard_cleanups"].samples
                 if s.name == "memguard_cleanups_total"]
    assert sample.value == 2


# --------------------------------------------------------------------------------------------
# POST /memory/cleanup


def test_cleanup_is_refused_without_a_configured_token(make_client: AppFactory, store: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    client = make_client()
    response = client.post("/memory/cleanup", headers=bearer("anything"))
    assert response.status_code == 403
    assert "disabled" in response.json()["error"]
    assert len(store) == 7


def test_cleanup_token_from_the_environment(make_client: AppFactory, store: Any,
                                            probe: FakeProbe,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    client = make_client()
    probe.set("700MB")
    assert client.post("/memory/cleanup", headers=bearer("from-env")).status_code == 200
    assert client.post("/memory/cleanup", headers=bearer(TOKEN)).status_code == 403


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer ", "Basic czNjcmV0", "Token s3cret-token",
    "Bearer s3cret-token extra",
])
def test_cleanup_without_a_wellformed_bearer_is_401(client: Client, store: Any,
                                                    header: Any) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = client.post("/memory/cleanup", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["status"] == 401
    assert len(store) == 7


@pytest.mark.parametrize("token", ["wrong", TOKEN + "x", TOKEN[:-1], TOKEN.upper()])
def test_cleanup_with_a_wrong_token_is_403(client: Client, store: Any, token: str) -> None:
    response = client.post("/memory/cleanup", headers=bearer(token))
    assert response.status_code == 403
    assert response.json() == {"error": "invalid token", "status": 403}
    assert len(store) == 7


def test_cleanup_evicts_and_reports_counts_only(client: Client, store: Any,
                                                probe: FakeProbe) -> None:
    probe.set("700MB")
    response = client.post("/memory/cleanup", headers={"authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200
    report = response.json()
    assert report["kind"] == "emergency"
    assert report["evicted"] == 6
    assert report["by_store"] == {"diagram": {"emergency": 6}}
    assert report["usage_before_bytes"] == 700 * 2**20
    assert list(store) == ["running"]  # the active job stays
    assert SECRET not in response.text


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", 400), (b"[1, 2]", 400), (b'"text"', 400), (b"\xff\xfe", 400),
    (b"", 200), (b"   ", 200), (b"{}", 200), (b'{"reason": "deploy"}', 200),
])
def test_cleanup_body_is_optional_but_must_be_a_json_object(client: Client, store: Any,
                                                            body: bytes, code: int) -> None:
    response = client.post("/memory/cleanup", content=body,
                           headers={**bearer(), "content-type": "application/json"})
    assert response.status_code == code
    assert isinstance(response.json(), dict)


def test_cleanup_body_too_large_is_413(client: Client, store: Any) -> None:
    response = client.post("/memory/cleanup", content=b"{" + b" " * MAX_BODY_BYTES + b"}",
                           headers=bearer())
    assert response.status_code == 413
    assert len(store) == 7


def test_auth_is_checked_before_the_body(client: Client, store: Any) -> None:
    response = client.post("/memory/cleanup", content=b"{broken")
    assert response.status_code == 401
    huge = client.post("/memory/cleanup", content=b"x" * (MAX_BODY_BYTES + 1))
    assert huge.status_code == 401
    huge = client.post("/memory/cleanup", content=b"x" * (MAX_BODY_BYTES + 1),
                       headers=bearer("wrong"))
    assert huge.status_code == 403


def test_a_second_concurrent_cleanup_gets_409(mgr: MemoryManager,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()
    original = mgr.emergency_cleanup

    def slow() -> Any:
        entered.set()
        assert release.wait(10)
        return original()

    monkeypatch.setattr(mgr, "emergency_cleanup", slow)
    endpoints = Endpoints(mgr, token=TOKEN)
    results: list[Response] = []
    worker = threading.Thread(target=lambda: results.append(
        endpoints.handle("POST", "/memory/cleanup", authorization=f"Bearer {TOKEN}")))
    worker.start()
    try:
        assert entered.wait(10)
        second = endpoints.handle("POST", "/memory/cleanup", authorization=f"Bearer {TOKEN}")
        assert second.status == 409
        assert second.header("retry-after") == "1"
    finally:
        release.set()
        worker.join(10)
    assert results[0].status == 200


# --------------------------------------------------------------------------------------------
# Routing: 404, 405, HEAD, prefix


@pytest.mark.parametrize("path", ["/", "/nope", "/healthz", "/memory/cleanup/now",
                                  "/metrics.txt", "/health/live/x"])
def test_unknown_paths_are_404_json(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "not found", "status": 404}


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/health"), ("DELETE", "/memory"), ("PUT", "/metrics"),
    ("GET", "/memory/cleanup"), ("PATCH", "/health/live"), ("OPTIONS", "/health/ready"),
])
def test_wrong_method_is_405_with_allow(client: Client, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert allowed == set(ROUTES[path])
    assert response.json()["status"] == 405


def test_head_has_the_headers_and_no_body(client: Client) -> None:
    get, head = client.get("/memory"), client.request("HEAD", "/memory")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert int(head.headers["content-length"]) > 0


def test_trailing_slash_is_tolerated(client: Client) -> None:
    assert client.get("/health/").status_code == 200


@pytest.mark.parametrize("prefix", ["/ops", "ops", "/ops/", "/internal/memguard"])
def test_prefix_mounts_every_route(make_client: AppFactory, prefix: str) -> None:
    client = make_client(prefix=prefix, token=TOKEN)
    base = "/" + prefix.strip("/")
    assert client.get(f"{base}/health").status_code == 200
    assert client.get(f"{base}/metrics").status_code == 200
    assert client.get("/health").status_code == 404
    assert client.get(f"{base}x/health").status_code == 404
    assert client.post(f"{base}/memory/cleanup", headers=bearer()).status_code == 200


def test_responses_are_not_cached(client: Client) -> None:
    for path in ("/health", "/memory", "/metrics", "/nope"):
        assert client.get(path).headers["cache-control"] == "no-store"


def test_an_unexpected_error_is_a_json_500(client: Client, mgr: MemoryManager,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise RuntimeError(f"boom {SECRET}")

    monkeypatch.setattr(mgr, "get_memory_stats", broken)
    response = client.get("/memory")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error: RuntimeError", "status": 500}


# --------------------------------------------------------------------------------------------
# No job contents anywhere


def test_no_endpoint_leaks_job_contents(client: Client, store: Any, probe: FakeProbe) -> None:
    outputs = []
    for usage in ("100MB", "700MB"):
        probe.set(usage)
        for path in ("/health", "/health/ready", "/health/live", "/memory", "/metrics"):
            outputs.append(client.get(path).text)
        outputs.append(client.post("/memory/cleanup", headers=bearer()).text)
    outputs.append(client.get("/memory").text)
    for text in outputs:
        assert SECRET not in text
        assert "job-" not in text


# --------------------------------------------------------------------------------------------
# The core and the ASGI specifics


def test_dispatch_defers_only_blocking_work(mgr: MemoryManager) -> None:
    endpoints = Endpoints(mgr, token=TOKEN)
    assert isinstance(endpoints.dispatch("GET", "/health/live"), Response)
    assert isinstance(endpoints.dispatch("GET", "/nope"), Response)
    assert isinstance(endpoints.dispatch("POST", "/health"), Response)
    assert isinstance(endpoints.dispatch("POST", "/memory/cleanup"), Response)  # 401
    for path in ("/health", "/health/ready", "/memory", "/metrics"):
        assert callable(endpoints.dispatch("GET", path))
    assert callable(endpoints.dispatch("POST", "/memory/cleanup",
                                       authorization=f"Bearer {TOKEN}"))
    assert "cleanup=enabled" in repr(endpoints)


def test_asgi_health_answers_while_a_cleanup_blocks(mgr: MemoryManager,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The cleanup runs in a thread: the event loop keeps answering /health meanwhile."""
    entered, release = threading.Event(), threading.Event()
    original = mgr.emergency_cleanup

    def slow() -> Any:
        entered.set()
        release.wait(10)
        return original()

    monkeypatch.setattr(mgr, "emergency_cleanup", slow)
    app = asgi_app(mgr, token=TOKEN)

    async def scenario() -> tuple[int, list[int], float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            cleanup = asyncio.create_task(client.post("/memory/cleanup", headers=bearer()))
            for _ in range(200):  # bounded wait for the cleanup to start
                if entered.is_set():
                    break
                await asyncio.sleep(0.01)
            assert entered.is_set()
            start = time.perf_counter()
            health = await asyncio.gather(*(client.get("/health") for _ in range(20)))
            elapsed = time.perf_counter() - start
            release.set()
            return (await cleanup).status_code, [r.status_code for r in health], elapsed

    try:
        cleanup_status, health, elapsed = asyncio.run(scenario())
    finally:
        release.set()
    assert cleanup_status == 200
    assert health == [200] * 20
    assert elapsed < 5


def test_asgi_lifespan_and_websocket(mgr: MemoryManager) -> None:
    app = asgi_app(mgr)

    async def scenario() -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

        async def receive() -> dict[str, Any]:
            return inbox.pop(0)

        async def send(message: Any) -> None:
            sent.append(dict(message))

        await app({"type": "lifespan"}, receive, send)
        await app({"type": "websocket", "path": "/health"}, receive, send)
        return sent

    sent = asyncio.run(scenario())
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                        "lifespan.shutdown.complete", "websocket.close"]


def test_asgi_strips_the_root_path_of_a_mount(mgr: MemoryManager) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/ops", app=asgi_app(mgr))])
    client = Client("asgi", outer)
    assert client.get("/ops/health").status_code == 200
    assert client.get("/ops/memory").json()["level"] == "ok"
    assert client.get("/ops/nope").status_code == 404


def test_wsgi_under_a_dispatcher_routes_on_path_info(mgr: MemoryManager) -> None:
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    def root(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"root"]

    client = Client("wsgi", DispatcherMiddleware(root, {"/ops": wsgi_app(mgr)}))
    assert client.get("/ops/health").status_code == 200
    assert client.get("/health").text == "root"
