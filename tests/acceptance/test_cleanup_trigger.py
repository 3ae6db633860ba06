"""``memguard cleanup --pid`` end to end: gunicorn workers (the Flask example) and uvicorn (the
FastAPI example) on 127.0.0.1, each asked by pid for a cleanup and answering with its report;
the gunicorn master, which holds no stores, is refused with exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_servers import ROOT, TOKEN, free_port, gunicorn_argv, serve

POLICY = """
[memory]
limit = "8GB"
warning = "5GB"
emergency = "6GB"
emergency_target = "10MB"
critical = "7GB"
check_interval = "1h"
signal_cleanup = true
"""


def environment(tmp_path: Path) -> dict[str, str]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMGUARD_", "GUNICORN"))}
    env.update(MEMGUARD_TOKEN=TOKEN, MEMGUARD_POLICY=str(policy), PYTHONUNBUFFERED="1",
               WEB_CONCURRENCY="2", PYTHONPATH=str(ROOT),
               MEMGUARD_RUN_DIR=str(tmp_path / "run"))
    return env


def cleanup(pid: int, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memguard.tools.cli", "cleanup", "--pid", str(pid),
                           "--json", "--timeout", "20s"], capture_output=True, text=True,
                          timeout=60, env=env)


def workers_of(pid: int, count: int) -> list[int]:
    for _ in range(100):  # bounded: the arbiter forks its workers one after the other
        children = [c.pid for c in psutil.Process(pid).children()  # not multiprocessing's
                    if "resource_tracker" not in " ".join(c.cmdline())]  # resource tracker
        if len(children) == count:
            return children
        time.sleep(0.1)
    raise AssertionError(f"expected {count} workers of {pid}")


@pytest.mark.slow
@pytest.mark.parametrize("preload", [False, True], ids=["per-worker", "preload"])
def test_cleanup_by_pid_reaches_each_gunicorn_worker(tmp_path: Path, preload: bool) -> None:
    """With ``--preload`` the listener starts in the master and restarts in each forked
    worker (under its own pid); the master itself holds no stores either way."""
    env = environment(tmp_path)
    port = free_port()
    argv = gunicorn_argv("-c", "examples/gunicorn.conf.py", *(["--preload"] if preload else []),
                         "examples.flask_app:app")
    with serve("gunicorn-cleanup", argv, port, dict(env, PORT=str(port)),
               tmp_path / "gunicorn.log") as server:
        workers = workers_of(server.process.pid, 2)
        for worker in workers:
            result = cleanup(worker, env)
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["kind"] == "emergency"
        master = cleanup(server.process.pid, env)
        if preload:  # the master imported the app, so it listens too: its stores are empty
            assert master.returncode == 0, master.stderr
            assert json.loads(master.stdout)["evicted"] == 0
        else:
            assert master.returncode == 1
            assert f"pid {server.process.pid}: nothing there acts on cleanup requests" in \
                master.stderr
            assert "its child processes" in master.stderr
            assert all(str(w) in master.stderr for w in workers)
        log = server.log()
    for worker in workers:
        assert f"cleanup requested by `memguard cleanup --pid {worker}`" in log


# One uvicorn process stays in `make test`: the fast real-server case of `cleanup --pid`.
@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_cleanup_by_pid_reaches_uvicorn(tmp_path: Path, workers: int) -> None:
    """One uvicorn process, or uvicorn's own supervisor with two worker processes."""
    env = dict(environment(tmp_path), WEB_CONCURRENCY=str(workers))
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log"]
    with serve("uvicorn-cleanup", argv, port, env, tmp_path / "uvicorn.log") as server:
        targets = [server.process.pid]
        if workers > 1:
            targets = workers_of(server.process.pid, workers)
            assert cleanup(server.process.pid, env).returncode == 1  # the supervisor
        for pid in targets:
            result = cleanup(pid, env)
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["kind"] == "emergency"


@pytest.mark.slow
def test_cleanup_by_pid_reaches_uvicorn_workers_under_gunicorn(tmp_path: Path) -> None:
    env = environment(tmp_path)
    port = free_port()
    argv = gunicorn_argv("--workers", "2", "--worker-class", "uvicorn.workers.UvicornWorker",
                         "--bind", f"127.0.0.1:{port}", "examples.fastapi_app:app")
    with serve("gunicorn-uvicorn-cleanup", argv, port, env, tmp_path / "guv.log") as server:
        for worker in workers_of(server.process.pid, 2):
            result = cleanup(worker, env)
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["kind"] == "emergency"
