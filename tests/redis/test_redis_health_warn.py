"""A Redis store whose server goes down mid-run, seen from the user's side (issue 22): a
real app under gunicorn (hooks from ``-c python:memguard.integrations.gunicorn``), a real
redis-server stopped while it serves. `/health` turns ``warn`` naming the store, `/metrics`
has ``memguard_store_up{store="results"} 0``, ``memguard health --url`` prints the warning
(exit 0: a warn is not a failed check, docs/decisions.md), the dashboard in headless Chromium
shows ``warn`` and the unreachable store; once the server is back, ``pass`` again."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.redis.conftest import RedisServer

pytestmark = pytest.mark.slow

WAIT = 30.0  # the longest any condition may take (seconds); never a timing check

APP = textwrap.dedent('''
    import os
    from flask import Flask
    import memguard
    from memguard import managed_store
    from memguard.redis import RedisStore


    @managed_store(name="results", max_jobs=50)
    class Results(RedisStore):
        pass


    results = Results(os.environ["REDIS_URL"])
    results["a"] = {"status": "done", "result": "x" * 1000}
    app = Flask(__name__)
    memguard.integrations.flask.init_app(app, start=False)  # the post_fork hook starts it
''')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
            kind = response.headers.get("content-type", "")
            return response.status, json.loads(body) if "json" in kind else body.decode()
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def until(what: str, condition: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + WAIT
    while True:  # bounded by the deadline
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def store_up(base: str) -> dict[str, float]:
    _, body = get(base + "/metrics")
    return {sample.labels["store"]: sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples if sample.name == "memguard_store_up"}


def cli_health(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memguard.tools.cli", "health", "--url", url],
                          capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def gunicorn_app(tmp_path: Path, redis_url: str) -> Iterator[str]:
    (tmp_path / "app.py").write_text(APP)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMGUARD_", "GUNICORN"))}
    env.update(REDIS_URL=redis_url, MEMGUARD_MEMORY_LIMIT="2GB", PYTHONPATH=str(tmp_path),
               PYTHONUNBUFFERED="1")
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:memguard.integrations.gunicorn",
             "--bind", f"127.0.0.1:{port}", "--workers", "1", "app:app"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def answers() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return get(base + "/health/live")[0] == 200
            except (urllib.error.URLError, ConnectionError):
                return False

        until("gunicorn answers", answers)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium through selenium (Debian's chromium and chromedriver)."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.fail("needs chromium and chromedriver (apt-get install chromium "
                    "chromium-driver)", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="memguard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    session.set_page_load_timeout(WAIT)
    try:
        yield session
    finally:
        session.quit()
        shutil.rmtree(profile, ignore_errors=True)


def text_of(session: Any, selector: str) -> str:
    found = session.find_elements("css selector", selector)
    try:
        return " ".join(element.text for element in found)
    except Exception:  # redrawn between find and read: read again at the next poll
        return ""


def test_a_redis_store_down_mid_run_is_a_warn_everywhere(own_redis: RedisServer,
                                                         tmp_path: Path) -> None:
    with gunicorn_app(tmp_path, own_redis.url) as base:
        # Up: limit known (MEMGUARD_MEMORY_LIMIT), monitor running (post_fork), Redis answers.
        status, health = get(base + "/health")
        assert (status, health["status"]) == (200, "pass"), health
        (check,) = health["checks"]["memguard:stores"]
        assert (check["componentId"], check["status"], check["observedValue"]) == (
            "results", "pass", True)
        assert store_up(base) == {"results": 1.0}
        ok = cli_health(base)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith("ok: ") and "\nwarn: " not in ok.stdout, ok.stdout

        own_redis.stop()  # mid-run

        status, health = get(base + "/health")
        assert (status, health["status"]) == (200, "warn"), health
        (note,) = [n for n in health["notes"] if n.startswith("store 'results' unreachable")]
        assert str(own_redis.port) in note  # the error names where Redis was
        (check,) = health["checks"]["memguard:stores"]
        assert (check["status"], check["observedValue"]) == ("warn", False)
        assert health["checks"]["memory:utilization"][0]["level"] == "ok"  # memory is fine
        _, memory = get(base + "/memory")
        assert memory["health"]["status"] == "warn"
        assert any(n.startswith("store 'results' unreachable") for n in memory["health"]["notes"])
        assert memory["stores"][0]["reachable"] is False
        assert store_up(base) == {"results": 0.0}

        for url in (base, base + "/health"):  # from /memory, and from /health
            warned = cli_health(url)
            assert warned.returncode == 0, warned.stderr  # warn: printed, not a failure
            lines = warned.stdout.splitlines()
            assert lines[0].startswith("warn (level ok): "), warned.stdout
            assert any(line.startswith("warn: store 'results' unreachable")
                       for line in lines), warned.stdout

        with chromium() as session:
            session.get(base + "/memory/dashboard")
            until("the dashboard's status badge says warn",
                  lambda: text_of(session, "#status").lower() == "warn")
            until("the dashboard lists the unreachable store",
                  lambda: "store 'results' unreachable" in text_of(session, "#health-notes li"))
            assert "(unreachable)" in until(
                "the store row marked", lambda: text_of(session, "tr.unreachable"))
            assert text_of(session, "#level").lower() == "ok"  # the level alone stays ok

        own_redis.start()  # back (a restart without persistence: empty, but reachable)
        until("/health passes again", lambda: get(base + "/health")[1]["status"] == "pass")
        assert store_up(base) == {"results": 1.0}
