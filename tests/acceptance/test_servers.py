"""The example apps on real servers, driven over HTTP on 127.0.0.1.

uvicorn serves the FastAPI example (one process) and gunicorn serves the Flask example (two
gthread workers, memguard's post_fork/worker_exit hooks). Each server is a subprocess on a free
port, awaited with a bounded readiness loop and always terminated. The tests only speak HTTP.

The policy given to the servers keeps every level at ``ok`` (thresholds in GB) but sets the
emergency target at 10MB, so a cleanup forced through ``POST /memory/cleanup`` really evicts
the finished jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from memguard.web.prometheus import run_directory

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "acceptance-token-5b1e"
SECRET = "SeCrEt-PLANTED-c0ffee-42"
JOB_KINDS = [("ai", "diagram"), ("ai", "iac"), ("deploy", "infrastructure"),
             ("deploy", "application"), ("magic", "concept"), ("magic", "app-creation")]
POLICY = """
[memory]
limit = "8GB"
warning = "5GB"
emergency = "6GB"
emergency_target = "10MB"
critical = "7GB"
check_interval = "1s"
"""
STARTUP_SECONDS = 30.0


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (closed again for the server to bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server subprocess serving one example app at `url`."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str],
                 log: Path) -> None:
        self.name, self.argv, self.port, self.log_path = name, argv, port, log
        self.url = f"http://127.0.0.1:{port}"
        self._log = log.open("wb")
        self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self) -> None:
        """Poll /health/live until it answers 200 (bounded by STARTUP_SECONDS)."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n"
                                     f"{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/live", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready within {STARTUP_SECONDS}s:\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL to the server's own process group after 15s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # stray workers of this group, if any
        self._log.close()


@contextlib.contextmanager
def serve(name: str, argv: list[str], port: int, env: dict[str, str],
          log: Path) -> Iterator[Server]:
    server = Server(name, argv, port, env, log)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    policy = tmp_path_factory.mktemp("policy") / "policy.toml"
    policy.write_text(POLICY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMGUARD_", "GUNICORN"))}
    env.update(MEMGUARD_TOKEN=TOKEN, MEMGUARD_POLICY=str(policy), EXAMPLE_RESULT_KB="64",
               EXAMPLE_JOB_SECONDS="0.2", PYTHONUNBUFFERED="1", WEB_CONCURRENCY="2",
               PYTHONPATH=str(ROOT))
    return env


@contextlib.contextmanager
def example_server(kind: str, env: dict[str, str],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``uvicorn-fastapi`` or ``gunicorn-flask``, on a free port, stopped on exit."""
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / f"{kind}.log"
    if kind == "uvicorn-fastapi":
        argv = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app",
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    else:
        argv = gunicorn_argv("-c", "examples/gunicorn.conf.py", "--access-logfile", "/dev/null",
                             "examples.flask_app:app")
    with serve(kind, argv, port, dict(env, PORT=str(port)), log) as running:
        directory = run_directory(running.process.pid)  # while the process lives
        yield running
    # uvicorn's supervisor (WEB_CONCURRENCY workers) runs no memguard code to remove the
    # metrics directory its workers shared; the next start would remove it as stale.
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def uvicorn_server(server_env: dict[str, str],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with example_server("uvicorn-fastapi", server_env, tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module")
def gunicorn_server(server_env: dict[str, str],
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with example_server("gunicorn-flask", server_env, tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module", params=["uvicorn_server", "gunicorn_server"],
                ids=["uvicorn-fastapi", "gunicorn-flask"])
def server(request: pytest.FixtureRequest) -> Server:
    """Each example server in turn."""
    running: Server = request.getfixturevalue(request.param)
    return running


def gunicorn_argv(*args: str) -> list[str]:
    """``python -m gunicorn ARGS``, without gunicorn's control socket (a file in $HOME that
    concurrent test servers would share) where this gunicorn has one."""
    from gunicorn.config import KNOWN_SETTINGS

    argv = [sys.executable, "-m", "gunicorn"]
    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        argv.append("--no-control-socket")
    return [*argv, *args]


def create_job(client: httpx.Client, segment: str, name: str, prompt: str) -> str:
    response = client.post(f"/api/{segment}/{name}", json={"prompt": prompt})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "pending"
    assert body["poll"] == f"/api/{segment}/{name}/{body['id']}"
    return str(body["id"])


def poll_until_done(client: httpx.Client, segment: str, name: str, job_id: str,
                    *, seconds: float = 15.0) -> dict[str, Any]:
    """Poll until the job is done. Under gunicorn a job lives in the worker that created it;
    a request that reaches the other worker gets 404, so 404s are retried too."""
    deadline = time.monotonic() + seconds
    seen: list[str] = []
    while time.monotonic() < deadline:
        response = client.get(f"/api/{segment}/{name}/{job_id}")
        if response.status_code == 200:
            job = response.json()
            seen.append(job["status"])
            if job["status"] == "done":
                return {"job": job, "seen": seen}
        else:
            assert response.status_code == 404, response.text
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not done within {seconds}s; statuses seen: {seen}")


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(name, labels) -> value of the answering process, without the ``pid`` label. With one
    worker every series names it; with several (gunicorn: multiprocess mode) the gauges are
    one series per worker and the counters are summed (no ``pid``): the answering worker is
    the one its ``python_info`` names, and its gauges and the sums are kept."""
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    answering = {s.labels.get("pid") for s in samples if s.name == "python_info"}
    assert len(answering) == 1, answering
    (pid,) = answering
    samples = [s for s in samples if s.labels.get("pid") in (pid, None)]
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid"))): s.value
            for s in samples}


# --------------------------------------------------------------------------------------------


def test_jobs_run_in_the_background_and_poll_to_done(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        ids = {(segment, name): create_job(client, segment, name, f"prompt {name}")
               for segment, name in JOB_KINDS}
        for (segment, name), job_id in ids.items():
            done = poll_until_done(client, segment, name, job_id)
            job = done["job"]
            assert job["kind"] == name.replace("-", "_")
            assert job["result"].startswith(f"{job['kind']} for 'prompt {name}'")
            assert len(job["result"]) > 64 * 1024
            assert set(done["seen"]) <= {"pending", "running", "done"}
        assert client.get("/api/ai/nope/x").status_code == 404
        assert client.get("/api/ai/diagram/not-a-job").status_code == 404


def test_health_memory_and_metrics(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        job_id = create_job(client, "ai", "diagram", "for memory")
        poll_until_done(client, "ai", "diagram", job_id)
        for path in ("/health", "/health/ready"):
            health = client.get(path)
            assert health.status_code == 200
            assert health.headers["content-type"] == "application/health+json"
            body = health.json()
            assert body["status"] == "pass"
            check = body["checks"]["memory:utilization"][0]
            assert check["observedUnit"] == "percent" and 0 < check["observedValue"] < 100
        live = client.get("/health/live").json()
        assert live["status"] == "pass"
        assert live["checks"]["memguard:monitor"][0]["observedValue"] is True

        memory = client.get("/memory").json()
        assert memory["level"] == "ok"
        assert memory["monitoring"] is True
        assert memory["thresholds"]["emergency_target"] == 10 * 2**20
        assert memory["sample"]["rss"] > 10 * 2**20
        stores = {s["name"]: s for s in memory["stores"]}
        assert set(stores) == {"diagram", "iac", "infrastructure", "application", "concept",
                               "app_creation"}
        for store in stores.values():
            assert set(store) >= {"jobs", "active", "pinned", "bytes", "evictions"}

        samples = metrics(client.get("/metrics").text)
        assert samples[("memguard_memory_usage_bytes", ())] > 10 * 2**20
        assert samples[("memguard_memory_limit_bytes", ())] == 8 * 2**30
        assert samples[("memguard_memory_level", (("level", "ok"),))] == 1
        assert samples[("memguard_monitor_running", ())] == 1
        assert ("memguard_store_jobs", (("store", "app_creation"),)) in samples


def test_uvicorn_counts_match_the_jobs_created(uvicorn_server: Server) -> None:
    """One process: every job is in the process that answers."""
    server = uvicorn_server
    with httpx.Client(base_url=server.url, timeout=10) as client:
        before = {s["name"]: s["jobs"] for s in client.get("/memory").json()["stores"]}
        ids = [create_job(client, "magic", "concept", f"c{i}") for i in range(3)]
        for job_id in ids:
            poll_until_done(client, "magic", "concept", job_id)
        after = {s["name"]: s for s in client.get("/memory").json()["stores"]}
        assert after["concept"]["jobs"] == before["concept"] + 3
        assert after["concept"]["bytes"] >= 3 * 64 * 1024
        samples = metrics(client.get("/metrics").text)
        assert samples[("memguard_store_jobs", (("store", "concept"),))] == after["concept"]["jobs"]


def test_gunicorn_runs_two_workers_each_with_a_monitor(gunicorn_server: Server) -> None:
    server = gunicorn_server
    workers = psutil.Process(server.process.pid).children()
    assert len(workers) == 2
    pids: set[int] = set()
    for _ in range(60):  # fresh connections until both workers have answered (bounded)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            memory = client.get("/memory").json()
            assert memory["monitoring"] is True
            pids.add(memory["pid"])
        if len(pids) == 2:
            break
    assert pids <= {w.pid for w in workers}
    print(f"\ngunicorn workers that answered /memory: {len(pids)} of 2")
    assert len(pids) == 2


def test_cleanup_requires_the_token_and_evicts(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        job_id = create_job(client, "deploy", "application", "to clean")
        poll_until_done(client, "deploy", "application", job_id)

        missing = client.post("/memory/cleanup")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        malformed = client.post("/memory/cleanup", headers={"Authorization": "Basic abc"})
        assert malformed.status_code == 401
        wrong = client.post("/memory/cleanup", headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 403
        auth = {"Authorization": f"Bearer {TOKEN}"}
        bad_json = client.post("/memory/cleanup", headers={**auth,
                               "content-type": "application/json"}, content=b"{not json")
        assert bad_json.status_code == 400
        assert bad_json.json()["error"] == "malformed JSON body"

        # Clean the worker that holds the job (under gunicorn: retry until it is the one).
        for _ in range(40):  # bounded
            report = client.post("/memory/cleanup", headers=auth, json={})
            assert report.status_code in (200, 409), report.text
            if report.status_code == 200 and report.json()["by_store"].get("application"):
                break
        body = report.json()
        assert body["kind"] == "emergency"
        assert body["by_store"]["application"]["emergency"] >= 1
        assert body["usage_before_bytes"] > 0
        gone = client.get(f"/api/deploy/application/{job_id}")
        if server.name == "uvicorn-fastapi":
            assert gone.status_code == 404  # evicted
        samples = metrics(client.get("/metrics").text)
        assert any(name == "memguard_cleanups_total" for name, _ in samples)


@pytest.mark.parametrize(("method", "path", "code"), [
    ("GET", "/nope", 404), ("GET", "/memory/cleanup", 405), ("POST", "/health", 405),
    ("DELETE", "/metrics", 405), ("PUT", "/memory", 405),
])
def test_bad_requests_get_json_errors(server: Server, method: str, path: str, code: int) -> None:
    response = httpx.request(method, f"{server.url}{path}", timeout=10)
    assert response.status_code == code
    if code == 405:
        assert response.headers["allow"]
        assert response.json()["status"] == 405
    else:  # the app's own 404 (Flask's is HTML, FastAPI's JSON); memguard's routes are not hit
        assert response.status_code == 404


def test_no_endpoint_shows_job_contents(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        job_id = create_job(client, "ai", "iac", SECRET)
        done = poll_until_done(client, "ai", "iac", job_id)
        assert SECRET in done["job"]["result"]  # the app itself serves its job, of course
        auth = {"Authorization": f"Bearer {TOKEN}"}
        outputs = []
        for _ in range(3):  # under gunicorn, give both workers a chance to answer
            with httpx.Client(base_url=server.url, timeout=30) as fresh:
                for path in ("/health", "/health/ready", "/health/live", "/memory",
                             "/metrics"):
                    outputs.append(fresh.get(path).text)
                outputs.append(fresh.get("/metrics", headers={
                    "Accept": "application/openmetrics-text"}).text)
                outputs.append(fresh.post("/memory/cleanup", headers=auth).text)
                outputs.append(fresh.post("/memory/cleanup").text)
                outputs.append(fresh.request("DELETE", "/memory").text)
                outputs.append(fresh.get("/memory").text)
        for text in outputs:
            assert SECRET not in text
            assert job_id not in text


async def _flood(url: str, *, requests: int, concurrency: int, path: str = "/health",
                 cleanup: bool = True) -> dict[str, Any]:
    """`requests` GET `path` at `concurrency` at a time, while POSTing cleanups in a loop."""
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    answers: list[tuple[int, Any]] = []
    cleanups: list[int] = []
    done = asyncio.Event()

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def one() -> None:
            async with semaphore:
                start = time.perf_counter()
                response = await client.get(path)
                latencies.append(time.perf_counter() - start)
                try:
                    payload: Any = response.json()
                except ValueError:
                    payload = None
                answers.append((response.status_code, payload))

        async def clean() -> None:
            for _ in range(500):  # bounded; ends when the flood is over
                if done.is_set() or not cleanup:
                    return
                response = await client.post("/memory/cleanup",
                                             headers={"Authorization": f"Bearer {TOKEN}"})
                cleanups.append(response.status_code)
                await asyncio.sleep(0)

        cleaner = asyncio.create_task(clean())
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        elapsed = time.perf_counter() - start
        done.set()
        await cleaner
    return {"latencies": latencies, "answers": answers, "cleanups": cleanups,
            "elapsed": elapsed}


@pytest.mark.slow  # sustained: hundreds of requests against repeated cleanups
def test_flood_of_health_checks_during_cleanups(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:  # something to evict
        ids = [(segment, name, create_job(client, segment, name, "flood"))
               for segment, name in JOB_KINDS for _ in range(3)]
        for segment, name, job_id in ids[:2]:
            poll_until_done(client, segment, name, job_id)
    result = asyncio.run(asyncio.wait_for(
        _flood(server.url, requests=500, concurrency=50), timeout=120))
    answers = result["answers"]
    assert len(answers) == 500
    for status, payload in answers:
        assert status == 200, payload
        assert isinstance(payload, dict) and payload["status"] == "pass"
        assert "memory:utilization" in payload["checks"]
    assert result["cleanups"], "no cleanup ran during the flood"
    assert set(result["cleanups"]) <= {200, 409}
    # The same flood on the app's own cheapest route (a 404 poll), without cleanups: the
    # client and the server share this machine's CPUs, so this is the yardstick.
    control = asyncio.run(asyncio.wait_for(_flood(
        server.url, requests=500, concurrency=50, path="/api/ai/diagram/unknown",
        cleanup=False), timeout=120))
    assert {status for status, _ in control["answers"]} == {404}

    def summary(run: dict[str, Any]) -> dict[str, float]:
        latencies = sorted(run["latencies"])
        return {"elapsed_s": round(run["elapsed"], 2),
                "p50_ms": round(statistics.median(latencies) * 1000, 1),
                "p95_ms": round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 1),
                "max_ms": round(latencies[-1] * 1000, 1)}

    figures = {"server": server.name, "cleanups": len(result["cleanups"]),
               "health": summary(result), "app_404_control": summary(control)}
    print(f"\n/health flood: {figures}")


@pytest.mark.slow  # a server of its own, stopped under load
def test_server_stops_gracefully(server_env: dict[str, str],
                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGTERM ends gunicorn (and its workers' monitors via worker_exit) within the bound."""
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "graceful.log"
    argv = gunicorn_argv("-c", "examples/gunicorn.conf.py", "examples.flask_app:app")
    with serve("gunicorn-graceful", argv, port, dict(server_env, PORT=str(port)), log) as server:
        workers = psutil.Process(server.process.pid).children()
        assert len(workers) == 2
        start = time.monotonic()
        server.process.terminate()
        assert server.process.wait(20) == 0
        assert time.monotonic() - start < 20
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


GROW_APP = '''
"""A WSGI app whose memory grows outside any job store, to drive a worker to critical."""
import json, os, time
import memguard

memguard.manager.load_policy(os.environ["MEMGUARD_POLICY"])
_held = []

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/grow":
        _held.append(bytearray(int(environ["QUERY_STRING"] or "0") * 2**20))
    elif path == "/slow":
        time.sleep(1.5)
    body = json.dumps({"pid": os.getpid(), "path": path}).encode()
    start_response("200 OK", [("content-type", "application/json"),
                              ("content-length", str(len(body)))])
    return [body]
'''

GROW_CONF = '''
from memguard.integrations.gunicorn import post_fork, worker_exit
workers = 1
worker_class = "gthread"
threads = 4
graceful_timeout = 10
'''

GROW_POLICY = """
[memory]
scope = "process"
limit = "1GB"
warning = "200MB"
emergency = "250MB"
emergency_target = "150MB"
critical = "300MB"
check_interval = 0.2
cooldown = 0
recycle = true
"""


@pytest.mark.slow  # a server of its own, driven past critical
def test_gunicorn_recycles_a_critical_worker_gracefully(
        server_env: dict[str, str], tmp_path: Path) -> None:
    """recycle = true: a worker past critical finishes its in-flight request and is replaced."""
    (tmp_path / "grow_app.py").write_text(GROW_APP)
    (tmp_path / "grow_conf.py").write_text(GROW_CONF)
    (tmp_path / "policy.toml").write_text(GROW_POLICY)
    port = free_port()
    env = dict(server_env, MEMGUARD_POLICY=str(tmp_path / "policy.toml"),
               PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    argv = gunicorn_argv("-c", str(tmp_path / "grow_conf.py"), "--bind", f"127.0.0.1:{port}",
                         "--chdir", str(tmp_path), "grow_app:app")
    with serve("gunicorn-recycle", argv, port, env, tmp_path / "recycle.log") as server:
        first = httpx.get(f"{server.url}/pid", timeout=10).json()["pid"]

        # /grow?400 holds 400MB outside every store, so no cleanup can help: critical.
        slow_task: Any = None

        async def drive() -> tuple[httpx.Response, httpx.Response]:
            nonlocal slow_task
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                slow_task = asyncio.create_task(client.get("/slow"))
                await asyncio.sleep(0.2)
                grow = await client.get("/grow?400")
                return await slow_task, grow

        slow, grow = asyncio.run(asyncio.wait_for(drive(), timeout=30))
        assert grow.status_code == 200 and grow.json()["pid"] == first
        assert slow.status_code == 200 and slow.json()["pid"] == first  # finished, not cut

        deadline = time.monotonic() + 20
        second = first
        while second == first and time.monotonic() < deadline:  # bounded
            with contextlib.suppress(httpx.HTTPError):
                second = httpx.get(f"{server.url}/pid", timeout=5).json()["pid"]
            time.sleep(0.2)
        assert second != first, server.log()
        assert not psutil.pid_exists(first) or psutil.Process(first).status() == \
            psutil.STATUS_ZOMBIE
        log = server.log()
        assert "asking gunicorn to recycle" in log
        assert server.process.poll() is None  # the arbiter itself carries on


@pytest.mark.slow  # a server of its own
def test_the_documented_procfile_serves(server_env: dict[str, str], tmp_path: Path) -> None:
    """docs/integrations.md's Procfile line, run as Heroku would (on loopback here)."""
    text = (ROOT / "docs" / "integrations.md").read_text()
    match = re.search(r"^web: (.+)$", text, re.MULTILINE)
    assert match is not None
    port = free_port()
    command = match.group(1).replace("$PORT", str(port)).replace("0.0.0.0", "127.0.0.1")
    command = command.replace(" app:app", " examples.flask_app:app")  # the user's app: ours
    argv = shlex.split(command)
    assert argv[0] == "gunicorn"
    env = dict(server_env, PORT=str(port), MALLOC_ARENA_MAX="2")
    log = tmp_path / "procfile.log"
    with serve("procfile", gunicorn_argv(*argv[1:]), port, env, log) as web, \
            httpx.Client(base_url=web.url, timeout=10) as client:
        assert client.get("/health").json()["status"] == "pass"
        job_id = create_job(client, "magic", "concept", "heroku")
        poll_until_done(client, "magic", "concept", job_id)
