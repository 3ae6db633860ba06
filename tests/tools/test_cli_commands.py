"""`memguard health`, `monitor` and `cleanup`, run as the user runs them: in a subprocess.

Running apps are played by a tiny HTTP server in a thread on 127.0.0.1 that answers with
memguard-shaped payloads (so these tests do not wait on the web module), plus one server
running the real `memguard.web.wsgi.wsgi_app` to prove the two agree. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import shlex
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

import pytest

MB = 2**20
CLEAN_ENV = {
    key: value for key, value in os.environ.items()
    if not key.startswith("MEMGUARD_") and key not in ("JOB_RETENTION_MINUTES",
                                                        "MAX_JOBS_PER_STORE")
}


def memguard(*args: str, env: Optional[dict[str, str]] = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `memguard ARGS...` in a fresh interpreter and capture what it prints."""
    return subprocess.run([sys.executable, "-m", "memguard.tools.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**CLEAN_ENV, **(env or {})})


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int,
                          *needles: str) -> str:
    """Exit `code`, no traceback, and the error is one line (argparse adds its usage first)."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    error = lines[-1]
    if code == 1:
        assert len(lines) == 1, lines
        assert error.startswith("memguard: ")
    else:
        assert re.match(r"memguard( \w+)?: error: ", error), error
    for needle in needles:
        assert needle in error
    return error


# -- a fake running app ------------------------------------------------------------------------


def memory_payload(level: str, usage: int) -> dict[str, Any]:
    """What an app's GET /memory answers (`MemoryStats.to_dict()` plus pid and time)."""
    limit = 512 * MB
    return {
        "sample": {"usage": usage, "rss": usage, "swap": 0, "heap": usage // 2, "limit": limit,
                   "scope": "process", "utilization": usage / limit},
        "level": level,
        "thresholds": {"warning": 400 * MB, "warning_heap": 300 * MB, "emergency": 500 * MB,
                       "emergency_target": 400 * MB, "critical": 600 * MB, "limit": limit},
        "stores": [
            {"name": "diagram", "jobs": 12, "active": 2, "pinned": 0, "bytes": 30 * MB,
             "unweighed": 2, "evictions": {"age": 3, "count": 1}},
            {"name": "iac", "jobs": 7, "active": 0, "pinned": 1, "bytes": 45 * MB,
             "unweighed": 0, "evictions": {}},
        ],
        "recent_cleanups": [],
        "growth_per_minute": 1.5 * MB,
        "time_to_limit": round((limit - usage) / (1.5 * MB) * 60),
        "monitoring": True,
        "pid": 4242,
        "time": "2026-01-01T00:00:00.000Z",
    }


def health_payload(level: str, usage: int) -> tuple[int, dict[str, Any]]:
    """What an app's GET /health answers (application/health+json)."""
    status = {"ok": "pass", "warning": "warn", "emergency": "warn", "critical": "fail"}[level]
    thresholds = memory_payload(level, usage)["thresholds"]
    return (503 if status == "fail" else 200), {
        "status": status,
        "description": "memguard memory health",
        "output": f"level {level}",
        "checks": {
            "memory:utilization": [{"componentType": "system", "observedUnit": "percent",
                                    "observedValue": round(usage / (512 * MB) * 100, 2),
                                    "status": status, "level": level}],
            "memory:usage": [{"componentType": "system", "observedUnit": "bytes",
                              "observedValue": usage, "status": status,
                              "thresholds": thresholds}],
        },
    }


class FakeApp:
    """An HTTP server in a thread answering like an app with memguard's endpoints mounted."""

    def __init__(self) -> None:
        self.level = "ok"
        self.usage = 300 * MB
        self.token = "s3cret"
        self.requests: list[tuple[str, str, Optional[str]]] = []
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def reply(self, status: int, payload: Any, kind: str = "application/json") -> None:
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                app.requests.append(("GET", self.path, self.headers.get("Authorization")))
                if self.path == "/memory":
                    self.reply(200, memory_payload(app.level, app.usage))
                elif self.path == "/health":
                    status, payload = health_payload(app.level, app.usage)
                    self.reply(status, payload, "application/health+json")
                elif self.path == "/page/memory":
                    self.reply(200, b"<html>not memguard</html>", "text/html")
                elif self.path == "/other/memory":
                    self.reply(200, {"hello": "world"})
                else:
                    self.reply(404, {"error": "not found", "status": 404})

            def do_POST(self) -> None:
                auth = self.headers.get("Authorization")
                app.requests.append(("POST", self.path, auth))
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path != "/memory/cleanup":
                    self.reply(404, {"error": "not found", "status": 404})
                elif not auth or not auth.startswith("Bearer "):
                    self.reply(401, {"error": "a bearer token is required", "status": 401})
                elif auth != f"Bearer {app.token}":
                    self.reply(403, {"error": "invalid token", "status": 403})
                else:
                    self.reply(200, {
                        "kind": "emergency", "evicted": 9, "by_cause": {"emergency": 9},
                        "by_store": {"diagram": {"emergency": 9}},
                        "freed_estimate_bytes": 90 * MB, "usage_before_bytes": 510 * MB,
                        "usage_after_bytes": 420 * MB, "reclaimed_bytes": 90 * MB,
                        "started_at": 0.0, "duration_seconds": 0.2, "note": "",
                    })

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def app() -> Iterator[FakeApp]:
    fake = FakeApp()
    try:
        yield fake
    finally:
        fake.close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port we bound and released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/memory"


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


@contextlib.contextmanager
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A child process that does nothing for a while (killed on exit)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child
    finally:
        child.kill()
        child.wait(timeout=10)


TINY_POLICY = textwrap.dedent("""\
    [memory]
    scope = "process"
    limit = "1MB"
    warning = "100KB"
    emergency = "200KB"
    emergency_target = "150KB"
    critical = "300KB"
""")


# -- memguard health ---------------------------------------------------------------------------


def test_health_of_this_machine() -> None:
    result = memguard("health", "--json")
    data = json.loads(result.stdout)
    assert data["scope"] in ("machine", "cgroup")
    assert data["usage"] > 0 and data["limit"] >= data["usage"] // 2
    assert data["level"] in ("ok", "warning", "emergency", "critical")
    assert result.returncode == (1 if data["level"] in ("emergency", "critical") else 0)
    text = memguard("health")
    assert text.stdout.splitlines()[0].startswith(f"{data['level']}: this ")
    assert "thresholds: warning " in text.stdout


def test_health_of_a_process_under_the_default_policy() -> None:
    with sleeper() as child:
        result = memguard("health", "--pid", str(child.pid), "--policy", "default", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["target"].startswith(f"pid {child.pid} (")
    assert data["scope"] == "process" and data["level"] == "ok" and data["ok"] is True
    assert 1 * MB < data["usage"] < 200 * MB
    assert data["limit"] == 512 * MB
    assert data["thresholds"] == {"warning": 400 * MB, "emergency": 500 * MB,
                                  "emergency_target": 400 * MB, "critical": 600 * MB}


def test_health_fails_at_critical(tmp_path: Path) -> None:
    policy = tmp_path / "tiny.toml"
    policy.write_text(TINY_POLICY)
    with sleeper() as child:
        result = memguard("health", "--pid", str(child.pid), "--policy", str(policy))
    assert result.returncode == 1
    assert result.stdout.startswith(f"critical: pid {child.pid}")


def test_health_of_a_missing_process() -> None:
    pid = dead_pid()
    assert_one_line_error(memguard("health", "--pid", str(pid)), 1, f"no process with pid {pid}")


@pytest.mark.parametrize("argument", ["abc", "0", "-3", "1.5"])
def test_health_rejects_a_bad_pid(argument: str) -> None:
    assert_one_line_error(memguard("health", f"--pid={argument}"), 2, "--pid")


@pytest.mark.parametrize(("level", "code"), [("ok", 0), ("warning", 0), ("emergency", 1),
                                             ("critical", 1)])
def test_health_of_an_app_follows_its_level(app: FakeApp, level: str, code: int) -> None:
    app.level, app.usage = level, {"ok": 100, "warning": 420, "emergency": 505,
                                   "critical": 610}[level] * MB
    result = memguard("health", "--url", f"{app.url}/memory", "--json")
    assert result.returncode == code, result.stderr
    data = json.loads(result.stdout)
    assert data["level"] == level and data["ok"] is (code == 0)
    assert data["usage"] == app.usage and data["limit"] == 512 * MB
    assert data["thresholds"]["emergency"] == 500 * MB
    assert [(s["name"], s["jobs"]) for s in data["stores"]] == [("diagram", 12), ("iac", 7)]


def test_health_of_an_app_in_text(app: FakeApp) -> None:
    result = memguard("health", "--url", app.url)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"ok: {app.url}/memory (pid 4242) uses 300.0MB of 512.0MB (59%) [process]"
    assert "thresholds: warning 400.0MB · emergency 500.0MB · critical 600.0MB · limit 512.0MB" \
        in lines
    assert "store diagram: 12 jobs, 2 active, 30.0MB" in lines


def test_health_reads_memory_below_a_base_url(app: FakeApp) -> None:
    assert memguard("health", "--url", app.url + "/").returncode == 0
    assert [path for _, path, _ in app.requests] == ["/memory"]


@pytest.mark.parametrize(("level", "code", "status"), [("ok", 0, "pass"), ("emergency", 1, "warn"),
                                                       ("critical", 1, "fail")])
def test_health_of_an_app_health_endpoint(app: FakeApp, level: str, code: int,
                                          status: str) -> None:
    app.level = level
    result = memguard("health", "--url", f"{app.url}/health", "--json")
    assert result.returncode == code
    data = json.loads(result.stdout)
    assert data["status"] == status and data["level"] == level
    assert data["usage"] == app.usage and data["limit"] == 512 * MB


def test_health_of_an_unreachable_app() -> None:
    url = closed_port_url()
    assert_one_line_error(memguard("health", "--url", url), 1, f"cannot reach {url}")


@pytest.mark.parametrize(("path", "needle"), [
    ("/nothing/here", "HTTP 404"),
    ("/page/memory", "not JSON"),
    ("/other/memory", "not a memguard /memory or /health payload"),
])
def test_health_of_something_that_is_not_memguard(app: FakeApp, path: str, needle: str) -> None:
    assert_one_line_error(memguard("health", "--url", app.url + path), 1, needle)


@pytest.mark.parametrize("args", [
    ["--url", "ftp://example.com/memory"],
    ["--url", "localhost:8000"],
    ["--url", "http://127.0.0.1:1", "--pid", "1"],
    ["--timeout", "soon"],
    ["--frobnicate"],
])
def test_health_usage_errors(args: list[str]) -> None:
    assert_one_line_error(memguard("health", *args), 2)


def test_health_with_a_bad_policy_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[memory]\nlimit = "lots"\n')
    assert_one_line_error(memguard("health", "--policy", str(bad)), 1, "bad.toml", "limit")


def test_health_against_the_real_web_app(tmp_path: Path) -> None:
    """The command reads what memguard.web really serves, /memory and /health alike."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent("""\
        import sys, threading
        from wsgiref.simple_server import WSGIRequestHandler, make_server
        from memguard import MemoryManager, managed_store
        from memguard.policy import bundled_policy, load_policy
        from memguard.testing import FakeProbe
        from memguard.web import wsgi_app

        manager = MemoryManager(load_policy(bundled_policy("default"), environ={}),
                                probe=FakeProbe("450MB", limit="512MB"))

        @managed_store(name="diagram", manager=manager)
        class Diagrams(dict):
            pass

        store = Diagrams()
        for i in range(5):
            store[f"job{i}"] = {"status": "completed", "result": "x" * 100_000}
        store["running"] = {"status": "running", "result": None}

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args):
                pass

        server = make_server("127.0.0.1", 0, wsgi_app(manager, token="t0k"), handler_class=Quiet)
        print(server.server_address[1], flush=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        sys.stdin.read()
    """))
    child = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=CLEAN_ENV)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        memory = memguard("health", "--url", f"{url}/memory", "--json")
        assert memory.returncode == 0, memory.stderr
        data = json.loads(memory.stdout)
        assert data["level"] == "warning" and data["usage"] == 450 * MB
        assert data["thresholds"]["critical"] == 600 * MB
        assert {s["name"]: (s["jobs"], s["active"]) for s in data["stores"]} == {
            "diagram": (6, 1)}
        health = json.loads(memguard("health", "--url", f"{url}/health", "--json").stdout)
        assert (health["level"], health["status"]) == ("warning", "warn")
        cleaned = memguard("cleanup", "--url", url, "--token", "t0k", "--json")
        assert cleaned.returncode == 0, cleaned.stderr
        report = json.loads(cleaned.stdout)
        assert report["kind"] == "emergency" and report["evicted"] == 5  # the running job stays
        refused = memguard("cleanup", "--url", url, "--token", "wrong")
        assert_one_line_error(refused, 1, "HTTP 403")
    finally:
        child.kill()
        child.wait(timeout=10)


# -- memguard monitor --------------------------------------------------------------------------


def parse_logfmt(line: str) -> dict[str, str]:
    return {key: value.strip('"') for key, value in
            re.findall(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S+)', line)}


def test_monitor_logfmt_lines(app: FakeApp) -> None:
    result = memguard("monitor", "--url", app.url, "--interval", "200ms", "--duration", "1s",
                      "--logfmt")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert 3 <= len(lines) <= 8
    fields = parse_logfmt(lines[0])
    assert fields["level"] == "ok" and fields["usage"] == str(300 * MB)
    assert fields["usage_h"] == "300.0MB" and fields["limit"] == str(512 * MB)
    assert fields["warning"] == str(400 * MB) and fields["critical"] == str(600 * MB)
    assert fields["jobs"] == "19" and fields["jobs.diagram"] == "12"
    assert fields["target"] == f"{app.url}/memory (pid 4242)"  # the worker that answered


def test_monitor_prints_lines_when_stdout_is_not_a_terminal() -> None:
    with sleeper() as child:
        result = memguard("monitor", "--pid", str(child.pid), "--interval", "0.2",
                          "--duration", "0.5", "--policy", "default")
    assert result.returncode == 0
    assert all(parse_logfmt(line)["level"] == "ok" for line in result.stdout.splitlines())
    assert len(result.stdout.splitlines()) >= 2


def test_monitor_keeps_going_when_the_app_goes_away(app: FakeApp) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "memguard.tools.cli", "monitor", "--url", app.url,
         "--interval", "0.1",
         "--duration", "3", "--logfmt", "--timeout", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CLEAN_ENV)
    try:
        assert child.stdout is not None
        first = child.stdout.readline()
        assert parse_logfmt(first)["level"] == "ok"
        app.close()
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, err
    last = parse_logfmt(out.splitlines()[-1])
    assert last["level"] == "unknown" and "cannot reach" in last["error"]


def test_monitor_of_an_unreachable_app_fails_at_once() -> None:
    url = closed_port_url()
    assert_one_line_error(memguard("monitor", "--url", url, "--duration", "1"), 1, "cannot reach")


@pytest.mark.parametrize("args", [["--interval", "fast"], ["--interval", "0"],
                                  ["--duration", "-1s"], ["--logfmt=yes"], ["--pid", "x"]])
def test_monitor_usage_errors(args: list[str]) -> None:
    assert_one_line_error(memguard("monitor", *args), 2)


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-B]"
                   r"|\x1b[=>78]")


def run_in_terminal(args: list[str], *, columns: int = 110, rows: int = 40,
                    limit: float = 60) -> tuple[int, str]:
    """Run `memguard ARGS` on a pseudo-terminal; (exit code, the screen's text, ANSI removed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {**CLEAN_ENV, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(rows)}
    env.pop("NO_COLOR", None)
    child = subprocess.Popen([sys.executable, "-m", "memguard.tools.cli", *args], stdin=slave,
                             stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif child.poll() is not None:
                break
        code = child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        os.close(master)
    return code, _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def test_monitor_live_view_in_a_terminal(app: FakeApp) -> None:
    app.level, app.usage = "warning", 430 * MB
    code, screen = run_in_terminal(["monitor", "--url", app.url, "--interval", "0.25",
                                    "--duration", "2"])
    assert code == 0, screen
    assert "memguard monitor" in screen
    assert "WARNING" in screen
    assert "usage 430.0MB of 512.0MB limit (84%)" in screen
    for threshold in ("warning 400.0MB", "emergency 500.0MB", "critical 600.0MB",
                      "limit 512.0MB"):
        assert threshold in screen
    assert re.search(r"diagram\s+12\s+2\s+0\s+30\.0MB\s+age=3 count=1", screen), screen
    assert re.search(r"iac\s+7\s+0\s+1\s+45\.0MB", screen)
    assert "growth 1.5MB/min" in screen
    assert re.search(r"[▁▂▃▄▅▆▇█]{3,}", screen)  # the chart of recent samples
    assert "Traceback" not in screen


def test_monitor_live_view_of_a_process() -> None:
    with sleeper() as child:
        code, screen = run_in_terminal(["monitor", "--pid", str(child.pid), "--policy",
                                        "default", "--interval", "0.2", "--duration", "1"])
    assert code == 0, screen
    assert f"pid {child.pid}" in screen and "OK" in screen
    assert "warning 400.0MB" in screen and "limit 512.0MB" in screen
    assert "only an app's /memory endpoint reports stores" in screen


# -- memguard cleanup --------------------------------------------------------------------------


def test_cleanup_over_http(app: FakeApp) -> None:
    result = memguard("cleanup", "--url", app.url, "--token", "s3cret")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"cleanup at {app.url}/memory/cleanup: evicted 9 jobs (emergency 9), freed ~90.0MB, "
        "usage 510.0MB -> 420.0MB (reclaimed 90.0MB)")
    assert app.requests == [("POST", "/memory/cleanup", "Bearer s3cret")]


def test_cleanup_token_from_the_environment_and_json(app: FakeApp) -> None:
    result = memguard("cleanup", "--url", f"{app.url}/memory/cleanup", "--json",
                      env={"MEMGUARD_TOKEN": "s3cret"})
    assert result.returncode == 0
    assert json.loads(result.stdout)["evicted"] == 9


def test_cleanup_with_a_wrong_token(app: FakeApp) -> None:
    result = memguard("cleanup", "--url", app.url, "--token", "guess")
    assert_one_line_error(result, 1, "cleanup refused: HTTP 403: invalid token")


def test_cleanup_needs_a_token(app: FakeApp) -> None:
    assert_one_line_error(memguard("cleanup", "--url", app.url), 2, "--token")
    assert app.requests == []


def test_cleanup_of_an_unreachable_app() -> None:
    url = closed_port_url()
    assert_one_line_error(memguard("cleanup", "--url", url, "--token", "t"), 1, "cannot reach")


@pytest.mark.parametrize("args", [[], ["--url", "http://x", "--pid", "1"], ["--pid", "none"],
                                  ["--url", "nope"]])
def test_cleanup_usage_errors(args: list[str]) -> None:
    assert_one_line_error(memguard("cleanup", *args), 2)


def test_cleanup_of_a_missing_process() -> None:
    pid = dead_pid()
    assert_one_line_error(memguard("cleanup", "--pid", str(pid)), 1, f"no process with pid {pid}")


def test_cleanup_of_a_process_where_nothing_listens_fails(tmp_path: Path) -> None:
    """A live process without memguard's listener: exit 1, nothing sent, nothing claimed."""
    with sleeper() as child:
        result = memguard("cleanup", "--pid", str(child.pid),
                          env={"MEMGUARD_RUN_DIR": str(tmp_path)})
        assert_one_line_error(result, 1, f"pid {child.pid}: nothing there acts on cleanup "
                              "requests", "signal_cleanup = true", "--url")
        assert result.stdout == ""
        assert child.poll() is None  # untouched
    assert list(tmp_path.iterdir()) == []  # no request left behind


_SIGNAL_APP = textwrap.dedent("""\
    import logging, sys, time
    from memguard import MemoryManager, managed_store
    from memguard.policy import Policy

    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    # Thresholds far above this process: no check cleans anything by itself, and the only
    # check after the first comes an hour later. Only the request can evict.
    policy = Policy.from_toml(
        '[memory]\\nscope = "process"\\nlimit = "64GB"\\nwarning = "40GB"\\n'
        'emergency = "50GB"\\nemergency_target = "1MB"\\ncritical = "60GB"\\n'
        'check_interval = "1h"\\nsignal_cleanup = SIGNAL_CLEANUP\\n', environ={})
    manager = MemoryManager(policy)

    @managed_store(name="diagram", manager=manager)
    class Diagrams(dict):
        pass

    store = Diagrams()
    store["done"] = {"status": "completed", "result": "x" * 10_000}
    manager.start()
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "done" in store:
        time.sleep(0.05)
    print("evicted" if "done" not in store else "timeout", flush=True)
    time.sleep(2)  # the listener writes its report after the eviction: let it
""")


def _signal_app(enabled: bool) -> subprocess.Popen[str]:
    script = _SIGNAL_APP.replace("SIGNAL_CLEANUP", str(enabled).lower())
    child = subprocess.Popen([sys.executable, "-c", script],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=CLEAN_ENV)
    assert child.stdout is not None
    for line in child.stdout:  # bounded: the child prints ready, or exits
        if line.strip() == "ready":
            break
    return child


def test_cleanup_by_pid_runs_the_apps_emergency_cleanup_and_prints_its_report() -> None:
    child = _signal_app(True)
    try:
        result = memguard("cleanup", "--pid", str(child.pid), "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["kind"] == "emergency"
        assert report["by_store"]["diagram"]["emergency"] == 1
        out, _ = child.communicate(timeout=30)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert "cleanup requested by `memguard cleanup --pid" in out
    assert "evicted" in out.splitlines()


def test_cleanup_by_pid_fails_when_the_app_did_not_enable_it() -> None:
    child = _signal_app(False)
    try:
        result = memguard("cleanup", "--pid", str(child.pid))
        assert_one_line_error(result, 1, "nothing there acts on cleanup requests")
        assert child.poll() in (None, 0)  # not signalled (it may have ended by itself)
    finally:
        child.kill()
        child.wait(timeout=10)


# -- the examples of docs/cli.md and docs/stress.md ------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs"


def documented_commands() -> list[str]:
    """Each `memguard ...` line of a shell block in the CLI docs (synopsis lines excepted)."""
    commands = []
    for page in ("cli.md", "stress.md"):
        in_shell = False
        for line in (DOCS / page).read_text().splitlines():
            if line.startswith("```"):
                in_shell = line.strip() == "```sh"
                continue
            command = line.removeprefix("$ ").split("  #")[0].strip()
            if in_shell and command.startswith("memguard ") and not any(
                    mark in command for mark in ("[", "|", "...")):
                commands.append(command)
    return commands


def test_the_docs_show_commands() -> None:
    assert len(documented_commands()) >= 10


@pytest.mark.parametrize("command", documented_commands())
def test_documented_commands_parse(command: str) -> None:
    from memguard.tools.cli.main import build_parser

    args = build_parser().parse_args(shlex.split(command)[1:])
    assert callable(args.run)


def test_documented_health_example(app: FakeApp) -> None:
    """The `memguard health --url` example of docs/cli.md, against a fake app in that state."""
    app.level, app.usage = "warning", 430 * MB
    text = (DOCS / "cli.md").read_text()
    block = text.split("$ memguard health --url http://127.0.0.1:8000/memory\n", 1)[1]
    expected = block.split("$ echo $?", 1)[0].replace("http://127.0.0.1:8000", app.url)
    result = memguard("health", "--url", f"{app.url}/memory")
    assert result.returncode == 0
    assert result.stdout == expected
