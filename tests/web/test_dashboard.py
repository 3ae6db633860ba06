"""``GET /memory/dashboard``: the page, its headers on every surface, and the page at work in a
real headless Chromium against real servers (uvicorn + FastAPI, gunicorn + Flask) on 127.0.0.1.

The browser part needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/system-packages``
installs them) and the ``selenium`` package (the ``dev`` extra). Without the browser it skips,
naming what to install (under .ci/run it fails instead: tests/system_packages.py); without
selenium it fails. docs/decisions.md says why Selenium with Debian's chromedriver drives it. Set
``MEMGUARD_UPDATE_SCREENSHOT=1`` to refresh docs/img/dashboard.png from the run.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
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
from typing import Any, Callable, Optional

import httpx
import pytest
from system_packages import missing

from memguard import MemoryManager, managed_store
from memguard.testing import FakeClock, FakeProbe
from memguard.web.asgi import asgi_app
from memguard.web.wsgi import wsgi_app

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "img" / "dashboard.png"
TOKEN = "dashboard-token"
SECRET = "dashboard-SECRET-5c1e"
STATIC = ROOT / "memguard" / "web" / "static" / "dashboard.html"


# --------------------------------------------------------------------------------------------
# The page and its headers, in-process on every surface


@pytest.fixture
def mgr() -> Iterator[MemoryManager]:
    manager = MemoryManager(clock=FakeClock(0.0), probe=FakeProbe("100MB", limit="512MB"))
    manager.load_policy('[memory]\nlimit = "512MB"\nwarning = "400MB"\nemergency = "480MB"\n'
                        'emergency_target = "380MB"\ncritical = "600MB"\ncheck_interval = "1h"\n')

    @managed_store(name="concept", manager=manager)
    class ConceptJobs(dict):  # type: ignore[type-arg]
        pass

    jobs = ConceptJobs()  # alive while the fixture's frame is suspended
    for i in range(3):
        jobs[f"c{i}"] = {"status": "done", "result": SECRET * 10}
    yield manager
    manager.stop()


def _inline_hashes(html: str, tag: str) -> list[str]:
    return ["'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
            for body in re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.DOTALL)]


def _check_page(status: int, headers: Any, body: bytes) -> None:
    """What every surface must send: the packaged page, as HTML, under a strict CSP."""
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert body == STATIC.read_bytes()
    assert int(headers["content-length"]) == len(body)
    assert headers["x-content-type-options"] == "nosniff"
    policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"]
                  .split(";"))
    html = body.decode()
    assert policy["default-src"] == "'none'"
    assert policy["script-src"].split() == _inline_hashes(html, "script")
    assert policy["style-src"].split() == _inline_hashes(html, "style")
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in headers["content-security-policy"]
    assert SECRET not in html


def test_page_is_self_contained() -> None:
    """No other origin, no external script, stylesheet, image or font: works offline."""
    html = STATIC.read_text(encoding="utf-8")
    urls = set(re.findall(r"[a-z]+://[^\s\"')]+", html))
    assert urls == {"http://www.w3.org/2000/svg"}  # the SVG namespace name, never fetched
    assert not re.search(r"<(script|link|img|iframe)[^>]*\s(src|href)=\"(?!data:)", html)
    assert len(re.findall(r"<script>", html)) == 1 and len(re.findall(r"<style>", html)) == 1
    assert " style=" not in html  # an inline style attribute would need 'unsafe-inline'
    assert "innerHTML" not in html and "eval(" not in html


def test_wsgi_app_serves_the_page(mgr: MemoryManager) -> None:
    with httpx.Client(transport=httpx.WSGITransport(app=wsgi_app(mgr, prefix="/ops")),
                      base_url="http://t") as client:
        response = client.get("/ops/memory/dashboard")
        _check_page(response.status_code, response.headers, response.content)
        head = client.head("/ops/memory/dashboard")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == response.headers["content-length"]
        assert client.post("/ops/memory/dashboard").status_code == 405


def test_asgi_app_serves_the_page(mgr: MemoryManager) -> None:
    async def go() -> None:
        transport = httpx.ASGITransport(app=asgi_app(mgr))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/memory/dashboard/")
            _check_page(response.status_code, response.headers, response.content)

    import asyncio

    asyncio.run(go())


def test_flask_init_app_mounts_the_page(mgr: MemoryManager) -> None:
    from flask import Flask

    from memguard.integrations.flask import init_app

    app = Flask("t")
    init_app(app, mgr, prefix="/ops", start=False)
    response = app.test_client().get("/ops/memory/dashboard")
    _check_page(response.status_code, response.headers, response.data)


def test_fastapi_router_mounts_the_page(mgr: MemoryManager) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from memguard.integrations.fastapi import router

    app = FastAPI()
    app.include_router(router(mgr, start=False), prefix="/ops")
    with TestClient(app) as client:
        response = client.get("/ops/memory/dashboard")
        _check_page(response.status_code, response.headers, response.content)
        assert "/ops/memory/dashboard" in client.get("/openapi.json").json()["paths"]


# --------------------------------------------------------------------------------------------
# The page at work: headless Chromium against real servers

CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1180",
                 "--disable-dev-shm-usage")
WAIT = 60.0  # the longest any condition may take to appear (seconds); never a timing check

APP_COMMON = textwrap.dedent('''
    import os
    from memguard import MemoryManager, managed_store

    POLICY = """
    [memory]
    scope = "process"
    limit = "192MB"
    warning = "64MB"
    emergency = "160MB"
    emergency_target = "8MB"
    critical = "224MB"
    """
    manager = MemoryManager()
    manager.load_policy(POLICY)


    @managed_store(name="diagram", manager=manager)
    class DiagramJobs(dict):
        pass


    @managed_store(name="iac", mapping="jobs", max_jobs=20, manager=manager)
    class IacJobs:
        def __init__(self):
            self.jobs = {}


    diagram = DiagramJobs()
    iac = IacJobs()
    for i in range(24):
        diagram[f"d{i}"] = {"status": "completed", "result": "%02d" % i * (1 << 19)}
    for i in range(2):
        diagram[f"r{i}"] = {"status": "running", "result": None}
    for i in range(25):  # over max_jobs: five count evictions at insert
        files = ["dashboard-SECRET-5c1e" * 3000]
        iac.jobs[f"i{i}"] = {"status": "completed", "result": {"files": files}}
''')

FASTAPI_APP = APP_COMMON + textwrap.dedent('''
    from fastapi import FastAPI
    from memguard.integrations.fastapi import router

    app = FastAPI()
    app.include_router(router(manager, token=os.environ["DASHBOARD_TOKEN"]), prefix="/ops")
''')

FLASK_APP = APP_COMMON + textwrap.dedent('''
    from flask import Flask
    from memguard.integrations.flask import init_app

    app = Flask(__name__)
    init_app(app, manager, token=os.environ["DASHBOARD_TOKEN"])
''')


def _need_browser() -> tuple[Any, str, str]:
    """(the selenium webdriver module, chromium path, chromedriver path), or a clear failure."""
    chromium = os.environ.get("MEMGUARD_CHROMIUM") or shutil.which("chromium") or ""
    driver = os.environ.get("MEMGUARD_CHROMEDRIVER") or shutil.which("chromedriver") or ""
    try:
        from selenium import webdriver
    except ImportError:  # a dev dependency, not a system package: the environment is broken
        pytest.fail("the dashboard tests need selenium: pip install -e '.[dev]'", pytrace=False)
    packages = [name for name, path in (("chromium", chromium), ("chromium-driver", driver))
                if not (path and os.access(path, os.X_OK))]
    if packages:
        missing("Chromium or its WebDriver (for the dashboard in a headless browser)",
                " ".join(packages))
    return webdriver, chromium, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver, chromium, driver_path = _need_browser()
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="memguard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """The browser, on a blank page with an empty console, left blank again afterwards (a
    dashboard left open would go on polling a server the next test has stopped)."""
    browser.get("about:blank")
    browser.get_log("browser")
    yield browser
    browser.get("about:blank")
    browser.get_log("browser")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str, *, token: Optional[str] = None, method: str = "GET") -> Any:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def _server(tmp: Path, source: str, command: Callable[[int], list[str]],
            ready_path: str) -> Iterator[str]:
    """Run `command(port)` serving the app in `source` (module ``app``); yield its base URL."""
    (tmp / "app.py").write_text(source, encoding="utf-8")
    port = _free_port()
    env = {**os.environ, "DASHBOARD_TOKEN": TOKEN, "PYTHONPATH": str(tmp)}
    log = (tmp / "server.log").open("w")
    process = subprocess.Popen(command(port), cwd=tmp, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT
        while True:  # bounded by the deadline
            if process.poll() is not None:
                pytest.fail(f"the server exited ({process.returncode}): "
                            f"{(tmp / 'server.log').read_text()[-2000:]}")
            try:
                _get(base + ready_path)
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not answer {ready_path} within {WAIT:g}s")
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait(driver: Any, what: str, condition: Callable[[], Any]) -> Any:
    """Poll `condition` until it returns something true; fail naming `what` after `WAIT`."""
    deadline = time.monotonic() + WAIT
    while True:  # bounded by the deadline
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            text = driver.find_element("tag name", "body").text[:1500]
            pytest.fail(f"the dashboard never showed {what}; it shows:\n{text}")
        time.sleep(0.1)


def _text(driver: Any, selector: str) -> Optional[str]:
    """The text of the first element matching `selector` (None when there is none). The page
    redraws its tables on every poll: an element found just before a redraw is stale when
    read, so it is found again (a bounded number of times)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        found = driver.find_elements("css selector", selector)
        try:
            return found[0].text if found else None
        except StaleElementReferenceException:
            time.sleep(0.05)
    return None


def _polls(driver: Any) -> int:
    value = driver.find_element("tag name", "body").get_attribute("data-polls")
    return int(value or 0)


def _console_errors(driver: Any, seen: list[dict[str, Any]]) -> list[str]:
    seen.extend(driver.get_log("browser"))  # get_log empties the browser's buffer
    return [entry["message"] for entry in seen if entry["level"] in ("SEVERE", "ERROR")]


@pytest.mark.slow
def test_dashboard_in_chromium_under_uvicorn(page: Any, tmp_path: Path) -> None:
    """FastAPI under uvicorn, mounted at /ops: the page loads with no console error, shows the
    level and the stores' job counts, and shows a cleanup made through the API."""
    command = [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port"]
    with _server(tmp_path, FASTAPI_APP, lambda port: [*command, str(port),
                                                       "--log-level", "warning"],
                 "/ops/health/live") as base:
        browser = page
        logs: list[dict[str, Any]] = []
        browser.get(f"{base}/ops/memory/dashboard?every=0.5")
        assert browser.title == "memguard dashboard"
        _wait(browser, "a reading", lambda: _polls(browser) >= 1)

        def level() -> Optional[str]:
            shown: Optional[str] = browser.find_element("id", "level").get_attribute(
                "data-level")
            return shown

        _wait(browser, "the level /memory reports",
              lambda: level() == _get(f"{base}/ops/memory")["level"])
        assert level() in ("ok", "warning", "emergency", "critical")
        assert (_text(browser, "#level") or "").lower() == level()
        _wait(browser, "diagram's 26 jobs",
              lambda: _text(browser, 'tr[data-store="diagram"] td.jobs') == "26")
        assert _text(browser, 'tr[data-store="diagram"] td.active') == "2"
        assert _text(browser, 'tr[data-store="iac"] td.jobs') == "20"
        assert _text(browser, 'tr[data-store="iac"] td.causes') == "count 5"
        assert SECRET not in browser.page_source  # the iac results hold it: never shown
        assert browser.find_elements("css selector", "#chart .t-limit")
        assert browser.find_elements("css selector", "#chart path.usage")
        assert "no cleanup yet" in (_text(browser, "#cleanups") or "")
        polled = _polls(browser)
        _wait(browser, "a few more readings", lambda: _polls(browser) >= polled + 10)

        report = _get(f"{base}/ops/memory/cleanup", token=TOKEN, method="POST")
        assert report["kind"] == "emergency" and report["evicted"] >= 24
        after = next(s for s in _get(f"{base}/ops/memory")["stores"] if s["name"] == "diagram")
        assert after["jobs"] == 2  # the target is 8MB: every finished job goes, none running
        _wait(browser, "diagram's jobs after the cleanup",
              lambda: _text(browser, 'tr[data-store="diagram"] td.jobs') == "2")
        _wait(browser, "the cleanup in the table", lambda: browser.find_elements(
            "css selector", '#cleanups tr[data-kind="emergency"]'))
        row = browser.find_elements("css selector", '#cleanups tr[data-kind="emergency"]')[0]
        assert row.find_element("css selector", "td.evicted").text == str(report["evicted"])
        assert "emergency" in (_text(browser, 'tr[data-store="diagram"] td.causes') or "")
        _wait(browser, "the cleanup on the chart", lambda: browser.find_elements(
            "css selector", "#chart .mark-head.emergency"))
        polled = _polls(browser)
        _wait(browser, "readings after the cleanup", lambda: _polls(browser) >= polled + 10)
        assert _console_errors(browser, logs) == []
        assert SECRET not in browser.page_source  # counts and sizes only, never contents
        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("MEMGUARD_UPDATE_SCREENSHOT"):
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)


# Unmarked: the fast case of the page in a real browser against a real server (make test).
def test_dashboard_in_chromium_under_gunicorn(page: Any, tmp_path: Path) -> None:
    """Flask under gunicorn at the root: same page, same readings, no console error; then the
    server stops, and the page says it cannot read /memory."""
    command = [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind"]
    with _server(tmp_path, FLASK_APP,
                 lambda port: [*command, f"127.0.0.1:{port}", "app:app"],
                 "/health/live") as base:
        browser = page
        logs: list[dict[str, Any]] = []
        browser.get(f"{base}/memory/dashboard")
        _wait(browser, "a reading", lambda: _polls(browser) >= 1)
        _wait(browser, "diagram's 26 jobs",
              lambda: _text(browser, 'tr[data-store="diagram"] td.jobs') == "26")
        assert _text(browser, "#source") == "/memory"
        memory = _get(f"{base}/memory")
        assert f"pid {memory['pid']}" in (_text(browser, "#where") or "")
        # Fit the chart to the usage: the thresholds above the next one leave the chart.
        browser.find_element("id", "scale").click()
        assert _text(browser, "#scale") == "show every threshold"
        assert "off the chart: " in (_text(browser, "#chart-note") or "")
        assert browser.find_elements("css selector", "#chart path.usage")
        browser.find_element("id", "scale").click()
        assert _text(browser, "#scale") == "fit to usage"
        assert _text(browser, "#chart-note") == ""
        assert _console_errors(browser, logs) == []
    # The server is gone: the page says so, keeps the last reading, and goes on polling.
    _wait(browser, "that /memory cannot be read",
          lambda: (_text(browser, "#conn") or "").startswith("cannot read /memory: "))
    assert "showing the reading of" in (_text(browser, "#conn") or "")
    assert _text(browser, 'tr[data-store="diagram"] td.jobs') == "26"


@pytest.mark.parametrize(("required", "outcome", "returncode"),
                         [("", "1 skipped", 0), ("1", "1 error", 1)])
def test_a_missing_chromium_skips_naming_what_to_install(
        tmp_path: Path, required: str, outcome: str, returncode: int) -> None:
    """Without a browser the Chromium tests skip and say what to install; under .ci/run
    (MEMGUARD_REQUIRE_SYSTEM_PACKAGES=1) the browser fixture fails them instead."""
    env = {**os.environ, "MEMGUARD_CHROMIUM": str(tmp_path / "no-chromium"),
           "MEMGUARD_CHROMEDRIVER": str(tmp_path / "no-chromedriver"),
           "MEMGUARD_REQUIRE_SYSTEM_PACKAGES": required}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--no-header",
         f"{__file__}::test_dashboard_in_chromium_under_uvicorn"],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert result.returncode == returncode, result.stdout + result.stderr
    assert outcome in result.stdout
    assert "sudo apt-get install chromium chromium-driver" in result.stdout


def test_the_docs_screenshot_is_a_png() -> None:
    """docs/dashboard.md shows docs/img/dashboard.png, taken by the test above."""
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "img/dashboard.png" in (ROOT / "docs" / "dashboard.md").read_text(encoding="utf-8")
