"""Under gunicorn with two workers and no PROMETHEUS_MULTIPROC_DIR, every scrape of /metrics
shows both workers (issue 22): memguard's hooks manage a multiprocess run directory, made
before or as the workers fork and removed when the arbiter exits. Scraped over one kept-alive
connection (which a real Prometheus reuses, reaching the same worker every time) and over
fresh connections."""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_servers import ROOT, TOKEN, free_port, gunicorn_argv, serve

from memguard.web.prometheus import RUN_PREFIX, run_directory

pytestmark = pytest.mark.slow

SCRAPES = 12

HOOKS = {
    # The example configuration: every hook, the directory made in the arbiter by pre_fork.
    "all-hooks": "child_exit, on_exit, post_fork, post_worker_init, pre_fork, worker_exit",
    # An older configuration without pre_fork/on_exit: the first worker makes the directory.
    "older-conf": "child_exit, post_fork, worker_exit",
}


def usage_pids(text: str) -> set[str]:
    """The pids of the memguard_memory_usage_bytes series in one scrape."""
    return {sample.labels["pid"] for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "memguard_memory_usage_bytes"}


@pytest.mark.parametrize("hooks", sorted(HOOKS))
def test_every_scrape_shows_both_workers(hooks: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEMGUARD_", "GUNICORN", "PROMETHEUS_", "prometheus_"))}
    env.update(MEMGUARD_TOKEN=TOKEN, MEMGUARD_POLICY="small-dyno", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT), EXAMPLE_JOB_SECONDS="0")
    (tmp_path / "conf.py").write_text(
        f"from memguard.integrations.gunicorn import {HOOKS[hooks]}\n"
        'workers = 2\nworker_class = "gthread"\nthreads = 4\ngraceful_timeout = 10\n')
    port = free_port()
    argv = gunicorn_argv("-c", str(tmp_path / "conf.py"), "--bind", f"127.0.0.1:{port}",
                         "--chdir", str(ROOT), "examples.flask_app:app")
    with serve(f"gunicorn-every-worker-{hooks}", argv, port, env,
               tmp_path / "gunicorn.log") as server:
        arbiter = server.process.pid
        directory = run_directory(arbiter)
        deadline = time.monotonic() + 20
        workers: set[str] = set()
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = {str(p.pid) for p in psutil.Process(arbiter).children()}
            time.sleep(0.1)
        assert len(workers) == 2, server.log()
        # Both workers booted: from the first scrape that follows, all of them show both.
        deadline = time.monotonic() + 10
        while usage_pids(httpx.get(f"{server.url}/metrics").text) != workers:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        answered: set[int] = set()
        with httpx.Client(base_url=server.url, timeout=30) as kept:  # one kept-alive connection
            for _ in range(SCRAPES):
                assert usage_pids(kept.get("/metrics").text) == workers
                answered.add(kept.get("/memory").json()["pid"])
        for _ in range(SCRAPES):
            with httpx.Client(base_url=server.url, timeout=30) as fresh:
                assert usage_pids(fresh.get("/metrics").text) == workers
                answered.add(fresh.get("/memory").json()["pid"])
        assert {str(pid) for pid in answered} <= workers
        assert os.path.isdir(directory), (directory, glob.glob(f"/tmp/{RUN_PREFIX}*"))
        assert glob.glob(os.path.join(directory, "gauge_liveall_*.db"))
    # The arbiter removed its run directory on the way out.
    assert not os.path.exists(directory)
    print(f"\n{hooks}: {2 * SCRAPES} scrapes, each showing workers {sorted(workers)}; "
          f"answered by {sorted(answered)}")
