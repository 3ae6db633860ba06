"""Under ``uvicorn --workers 2`` and no PROMETHEUS_MULTIPROC_DIR, every scrape of /metrics
shows both workers: each worker finds its supervisor (`uvicorn_supervisor`) when the app builds
its memguard endpoints and writes its figures to the run directory keyed on the supervisor's
pid. Real uvicorn serving the FastAPI example on 127.0.0.1; a run directory whose owner is gone
is removed as the workers start, and a worker the supervisor replaces drops out of the gauges.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from test_metrics_every_worker import usage_pids
from test_servers import ROOT, TOKEN, Server, free_port, serve

from memguard.web.prometheus import RUN_PREFIX, run_directory

SCRAPES = 12


def spawned_workers(supervisor: int) -> set[str]:
    """The pids of the workers uvicorn spawned (not multiprocessing's resource tracker)."""
    workers = set()
    for child in psutil.Process(supervisor).children():
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                workers.add(str(child.pid))
        except psutil.Error:
            continue
    return workers


def wait_for(condition: str, check: object, server: Server, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{condition}:\n{server.log()}"
        time.sleep(0.2)


def scrape(server: Server) -> set[str]:
    with httpx.Client(base_url=server.url, timeout=30) as fresh:  # a new connection each time
        return usage_pids(fresh.get("/metrics").text)


@pytest.fixture
def uvicorn_two_workers(tmp_path: Path) -> Iterator[Server]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEMGUARD_", "PROMETHEUS_", "prometheus_", "WEB_CONCURRENCY"))}
    env.update(MEMGUARD_TOKEN=TOKEN, MEMGUARD_POLICY="small-dyno", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT), EXAMPLE_JOB_SECONDS="0")
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--workers", "2",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    with serve("uvicorn-two-workers", argv, port, env, tmp_path / "uvicorn.log") as server:
        directory = run_directory(server.process.pid)  # while the supervisor lives
        yield server
    # The supervisor runs no memguard code: its directory stays until the next start.
    assert os.path.isdir(directory)
    shutil.rmtree(directory)


@pytest.fixture
def stale_and_live_directories() -> Iterator[tuple[str, str]]:
    """A run directory of a process that has exited, and one of a live process (this one)."""
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    stale = f"/tmp/{RUN_PREFIX}{exited.pid}-{int(time.time() * 1000)}"
    live = run_directory(os.getpid())
    for path in (stale, live):
        os.makedirs(path, exist_ok=True)
    yield stale, live
    for path in (stale, live):
        if os.path.isdir(path):
            os.rmdir(path)


def test_every_scrape_shows_both_uvicorn_workers(
        stale_and_live_directories: tuple[str, str], uvicorn_two_workers: Server) -> None:
    server = uvicorn_two_workers
    supervisor = server.process.pid
    wait_for("two workers", lambda: len(spawned_workers(supervisor)) == 2, server)
    workers = spawned_workers(supervisor)
    # Both workers loaded the app: from the first scrape that follows, all show both.
    wait_for("a scrape showing both workers", lambda: scrape(server) == workers, server)
    answered: set[int] = set()
    for _ in range(SCRAPES):
        assert scrape(server) == workers
        answered.add(httpx.get(f"{server.url}/memory", timeout=30).json()["pid"])
    with httpx.Client(base_url=server.url, timeout=30) as kept:  # one kept-alive connection
        for _ in range(SCRAPES):
            assert usage_pids(kept.get("/metrics").text) == workers
    assert {str(pid) for pid in answered} <= workers
    directory = run_directory(supervisor)
    assert {name.rpartition("_")[2][:-3] for name in os.listdir(directory)
            if name.startswith("gauge_liveall_")} == workers
    stale, live = stale_and_live_directories
    assert not os.path.exists(stale), "the run directory of an exited process was kept"
    assert os.path.isdir(live), "the run directory of a live process was removed"


def test_a_replaced_uvicorn_worker_drops_out_of_the_gauges(uvicorn_two_workers: Server) -> None:
    server = uvicorn_two_workers
    supervisor = server.process.pid
    wait_for("two workers", lambda: len(spawned_workers(supervisor)) == 2, server)
    workers = spawned_workers(supervisor)
    wait_for("a scrape showing both workers", lambda: scrape(server) == workers, server)
    killed = sorted(workers)[0]
    os.kill(int(killed), signal.SIGKILL)
    # uvicorn replaces it; within a mirroring interval the survivors drop its gauges.
    wait_for("a replacement worker", lambda: len(spawned_workers(supervisor) - workers) == 1,
             server, seconds=30)
    now = spawned_workers(supervisor)
    assert killed not in now
    wait_for("scrapes showing the new pair only", lambda: scrape(server) == now, server,
             seconds=30)
