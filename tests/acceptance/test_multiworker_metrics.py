"""/metrics of a gunicorn app with two workers, scraped 50 times on 127.0.0.1: every counter
series is monotonic, whichever worker answers; with PROMETHEUS_MULTIPROC_DIR and without it
(the run directory memguard's gunicorn hooks manage)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_servers import ROOT, TOKEN, create_job, free_port, gunicorn_argv, serve

pytestmark = pytest.mark.slow

SCRAPES = 50

CONF = '''
from memguard.integrations.gunicorn import child_exit, post_fork, worker_exit
workers = 2
worker_class = "gthread"
threads = 4
graceful_timeout = 10
'''

Series = tuple[str, tuple[tuple[str, str], ...]]


def counters(text: str) -> tuple[dict[Series, float], set[str]]:
    """Every counter sample (name, labels) -> value, and the pids the samples name."""
    values: dict[Series, float] = {}
    pids: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "pid" in sample.labels:
                pids.add(sample.labels["pid"])
            if family.type == "counter" and sample.name.endswith("_total"):
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values, pids


@pytest.fixture(params=["managed", "multiprocess"])
def mode(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEMGUARD_", "GUNICORN", "PROMETHEUS_", "prometheus_"))}
    policy = tmp_path / "policy.toml"
    policy.write_text('[memory]\nlimit = "8GB"\nwarning = "5GB"\nemergency = "6GB"\n'
                      'emergency_target = "10MB"\ncritical = "7GB"\ncheck_interval = "1s"\n'
                      '[defaults]\nmax_jobs = 2\n')
    env.update(MEMGUARD_TOKEN=TOKEN, MEMGUARD_POLICY=str(policy), EXAMPLE_RESULT_KB="16",
               EXAMPLE_JOB_SECONDS="0", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT),
               MODE=request.param)
    if request.param == "multiprocess":
        directory = tmp_path / "prometheus"
        directory.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    yield env


def test_counters_never_go_backwards_across_workers(mode: dict[str, str],
                                                    tmp_path: Path) -> None:
    (tmp_path / "conf.py").write_text(CONF)
    port = free_port()
    argv = gunicorn_argv("-c", str(tmp_path / "conf.py"), "--bind", f"127.0.0.1:{port}",
                         "--chdir", str(ROOT), "examples.flask_app:app")
    log = tmp_path / "gunicorn.log"
    previous: dict[Series, float] = {}
    answered: set[int] = set()
    changed = 0
    with serve(f"gunicorn-metrics-{mode['MODE']}", argv, port, mode, log) as server:
        deadline = time.monotonic() + 15  # until the second worker has booted
        while len(counters(httpx.get(f"{server.url}/metrics").text)[1]) < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        for i in range(SCRAPES):
            with httpx.Client(base_url=server.url, timeout=30) as client:  # a fresh connection
                create_job(client, "ai", "diagram", f"job {i}")  # max_jobs 2: evictions
                if i % 5 == 0:
                    cleanup = client.post("/memory/cleanup",
                                          headers={"Authorization": f"Bearer {TOKEN}"})
                    assert cleanup.status_code in (200, 409), cleanup.text
                answered.add(client.get("/memory").json()["pid"])
                text = client.get("/metrics").text
            current, pids = counters(text)
            assert ("memguard_evictions_total", ()) not in current
            assert any(name.startswith("process_cpu_seconds") for name, _ in current)
            assert any(name.startswith("python_gc_collections") for name, _ in current)
            for series, value in current.items():
                if series in previous:
                    assert value >= previous[series], (i, series, previous[series], value)
                    changed += value > previous[series]
                previous[series] = value
            assert len(pids) == 2  # every scrape: both workers' gauges
        assert len(answered) == 2, "both workers should have answered"
    evictions = {labels: v for (name, labels), v in previous.items()
                 if name == "memguard_evictions_total"}
    assert evictions and max(evictions.values()) > 0
    assert changed > 0
    # counters summed over the workers: no pid label
    assert all(dict(labels).get("pid") is None for labels in evictions)
    if mode["MODE"] == "multiprocess":
        assert list(Path(mode["PROMETHEUS_MULTIPROC_DIR"]).glob("counter_*.db"))
    print(f"\n{mode['MODE']}: {SCRAPES} scrapes, {len(previous)} counter series, all monotonic; "
          f"workers answered: {len(answered)}")
