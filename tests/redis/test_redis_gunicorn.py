"""Two gunicorn workers serving one app whose job stores live in Redis (issue 14).

Jobs are created and polled through both workers over fresh connections (so the kernel
hands them to either worker): none is lost, the count bound holds across the workers (never
more than max_jobs finished jobs in Redis, sampled all along), running jobs are never
evicted, and a short real max_age expires finished jobs through the workers' monitors.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.redis.conftest import RedisServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
POLICY = """
[memory]
limit = "8GB"
warning = "5GB"
emergency = "6GB"
emergency_target = "4GB"
critical = "7GB"
check_interval = "1s"
"""
MAX_JOBS = 5  # the diagram store's bound (tests/redis/redis_flask_app.py)
DEADLINE = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def gunicorn(redis_url: str, tmp_path: Path) -> Iterator[str]:
    """The app on two gthread workers (examples/gunicorn.conf.py: memguard's hooks start
    each worker's monitor); yields its URL once /health/live answers."""
    from gunicorn.config import KNOWN_SETTINGS

    port = free_port()
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMGUARD_", "GUNICORN"))}
    env.update(REDIS_URL=redis_url, MEMGUARD_POLICY=str(policy), PORT=str(port),
               WEB_CONCURRENCY="2", PYTHONUNBUFFERED="1", JOB_SECONDS="0.3",
               PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "gunicorn", "-c", "examples/gunicorn.conf.py",
            "--pythonpath", "tests/redis", "--access-logfile", "/dev/null"]
    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        argv.append("--no-control-socket")
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([*argv, "redis_flask_app:app"], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log_path.read_text(errors="replace")
                assert time.monotonic() < deadline, log_path.read_text(errors="replace")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health/live", timeout=1.0).status_code == 200:
                        break
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)


def create(url: str, kind: str, created_by: set[int]) -> str:
    response = httpx.post(f"{url}/api/{kind}", timeout=10)  # a fresh connection each time
    assert response.status_code == 202, response.text
    created_by.add(response.json()["pid"])
    return str(response.json()["id"])


def poll_until_done(url: str, kind: str, job_id: str, polled_by: set[int]) -> dict[str, Any]:
    """Poll until done; a 404 before that is a lost job (running jobs are never evicted)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        response = httpx.get(f"{url}/api/{kind}/{job_id}", timeout=10)
        assert response.status_code == 200, f"job {job_id} lost: {response.text}"
        polled_by.add(response.json()["pid"])
        job: dict[str, Any] = response.json()["job"]
        if job["status"] == "done":
            return job
        assert time.monotonic() < deadline, f"job {job_id} not done: {job}"
        time.sleep(0.05)


def test_two_workers_share_redis_stores(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    finished: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # finished jobs = stored - active, read in one MULTI/EXEC
        while not stop.is_set():
            pipe = client.pipeline(transaction=True)
            pipe.zcard("memguard:{diagram}:created")
            pipe.zcard("memguard:{diagram}:running")
            stored, active = pipe.execute()
            finished.append(stored - active)
            time.sleep(0.005)

    created_by: set[int] = set()
    polled_by: set[int] = set()
    delivered = 0
    with gunicorn(redis_url, tmp_path) as url:
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            waves = 0
            while waves < 6 or len(created_by) < 2 or len(polled_by) < 2:
                assert waves < 60, f"one worker never answered: {created_by}, {polled_by}"
                ids = [create(url, "diagram", created_by) for _ in range(MAX_JOBS)]
                for job_id in ids:
                    job = poll_until_done(url, "diagram", job_id, polled_by)
                    assert job["result"]["text"] == "r" * 2000
                    delivered += 1
                waves += 1
            assert delivered == waves * MAX_JOBS  # 0 lost

            aged = create(url, "iac", created_by)  # max_age 2s, passes every second
            poll_until_done(url, "iac", aged, polled_by)
            deadline = time.monotonic() + DEADLINE
            while httpx.get(f"{url}/api/iac/{aged}", timeout=10).status_code == 200:
                assert time.monotonic() < deadline, "the aged job was never expired"
                time.sleep(0.1)

            memory = httpx.get(f"{url}/memory", timeout=10).json()
            stores = {store["name"]: store for store in memory["stores"]}
            assert stores["diagram"]["backend"] == "redis" and stores["diagram"]["reachable"]
            assert stores["diagram"]["jobs"] <= MAX_JOBS
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
            assert re.search(r'memguard_store_jobs\{[^}]*store="diagram"', metrics), metrics
        finally:
            stop.set()
            watcher.join()
    assert len(created_by) == 2 and len(polled_by) == 2
    assert finished and max(finished) <= MAX_JOBS
    assert client.zcard("memguard:{diagram}:created") <= MAX_JOBS


def test_redis_killed_and_restarted_under_gunicorn(own_redis: RedisServer,
                                                   tmp_path: Path) -> None:
    with gunicorn(own_redis.url, tmp_path) as url:
        created_by: set[int] = set()
        polled_by: set[int] = set()
        before = create(url, "diagram", created_by)
        poll_until_done(url, "diagram", before, polled_by)

        own_redis.stop()
        for _ in range(6):  # both workers, whichever gets each fresh connection
            response = httpx.get(f"{url}/api/diagram/{before}", timeout=10)
            assert response.status_code == 503, response.text  # an error, never a 404
            assert "unavailable" in response.json()["error"]
            assert httpx.post(f"{url}/api/diagram", timeout=10).status_code == 503
        assert httpx.get(f"{url}/health/live", timeout=10).status_code == 200
        memory = httpx.get(f"{url}/memory", timeout=10).json()
        stores = {store["name"]: store for store in memory["stores"]}
        assert stores["diagram"]["reachable"] is False and stores["diagram"]["error"]
        assert memory["monitoring"] is True  # the failing passes did not stop the monitor

        own_redis.start()  # no persistence: it comes back empty
        deadline = time.monotonic() + DEADLINE
        while True:
            response = httpx.post(f"{url}/api/diagram", timeout=10)
            if response.status_code == 202:
                break
            assert response.status_code == 503 and time.monotonic() < deadline
            time.sleep(0.1)
        after = str(response.json()["id"])
        assert poll_until_done(url, "diagram", after, polled_by)["status"] == "done"
        assert httpx.get(f"{url}/health/live", timeout=10).status_code == 200
        stores = {s["name"]: s for s in httpx.get(f"{url}/memory", timeout=10).json()["stores"]}
        assert stores["diagram"]["reachable"] is True
