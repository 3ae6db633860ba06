"""`/health` never says ``pass`` wrongly (issue 22, DESIGN section 4): a monitor the app
configured that is not running, or no memory limit known, is a ``warn`` with a note saying
which, on `/health`, in `/memory`'s ``health`` section and in `/metrics`. And ``limit =
"auto"`` in a process without a container limit means "no limit known", never the machine's
RAM: thresholds given as percentages stay off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from memguard import MemoryManager
from memguard.memory.heap import physical_memory
from memguard.memory.probes import detect_limit
from memguard.testing import FakeProbe
from memguard.web.wsgi import wsgi_app

ROOT = Path(__file__).resolve().parents[2]

POLICY = ('[memory]\nlimit = "512MB"\nwarning = "400MB"\nemergency = "480MB"\n'
          'emergency_target = "380MB"\ncritical = "600MB"\n')


@pytest.fixture
def manager() -> Iterator[MemoryManager]:
    """A manager judging a fake 100MB reading against a known 512MB limit: the level is ok,
    so anything else that keeps /health from passing is what the test is about."""
    manager = MemoryManager(probe=FakeProbe("100MB", limit="512MB"))
    manager.load_policy(POLICY)
    yield manager
    manager.stop()


def get(manager: MemoryManager, path: str) -> httpx.Response:
    with httpx.Client(transport=httpx.WSGITransport(app=wsgi_app(manager)),
                      base_url="http://testserver") as client:
        return client.get(path)


def metric(manager: MemoryManager, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of `name` in /metrics, by their labels (pid left out)."""
    body = get(manager, "/metrics").text
    return {tuple(sorted((k, v) for k, v in sample.labels.items() if k != "pid")): sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples if sample.name == name}


def test_a_monitor_never_started_is_a_warn(manager: MemoryManager) -> None:
    response = get(manager, "/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "warn"
    (note,) = [n for n in body["notes"] if n.startswith("monitor not running")]
    assert "never started" in note and "post_fork" in note
    assert note in body["output"]
    (check,) = body["checks"]["memguard:monitor"]
    assert (check["status"], check["observedValue"], check["output"]) == ("warn", False, note)
    assert body["checks"]["memory:utilization"][0]["status"] == "pass"  # memory itself is ok
    health = get(manager, "/memory").json()["health"]
    assert health == {"status": "warn", "notes": [note]}
    assert metric(manager, "memguard_monitor_running") == {(): 0.0}


def test_running_passes_and_stopped_warns_again(manager: MemoryManager) -> None:
    manager.start()
    body = get(manager, "/health").json()
    assert body["status"] == "pass", body
    assert body["checks"]["memguard:monitor"][0]["observedValue"] is True
    assert "output" not in body
    assert get(manager, "/memory").json()["health"] == {"status": "pass", "notes": []}
    assert metric(manager, "memguard_monitor_running") == {(): 1.0}
    manager.stop()
    body = get(manager, "/health").json()
    assert body["status"] == "warn"
    assert "monitor not running: stopped" in body["notes"]


def test_a_monitor_whose_thread_died_is_a_warn(manager: MemoryManager) -> None:
    manager.start()
    monitor = manager.monitor
    assert monitor is not None
    thread = monitor._loop.thread
    assert thread is not None
    monitor._loop.stop_event.set()  # the thread ends while the monitor is still "started"
    monitor._loop.wake()
    thread.join(5)
    assert monitor.started and not monitor.running
    body = get(manager, "/health").json()
    assert body["status"] == "warn"
    assert any("is no longer running" in note for note in body["notes"])


def test_no_limit_known_is_a_warn_saying_how_to_set_one() -> None:
    """A probe that knows no limit, under `limit = "auto"` with sizes: the levels still come
    from the sizes, and /health says that no limit is known."""
    manager = MemoryManager(probe=FakeProbe("100MB", limit=None))
    manager.load_policy('[memory]\nlimit = "auto"\nwarning = "400MB"\nemergency = "480MB"\n'
                        'emergency_target = "380MB"\ncritical = "600MB"\n')
    manager.start()
    try:
        body = get(manager, "/health").json()
        assert body["status"] == "warn"
        (check,) = body["checks"]["memory:utilization"]
        assert check["status"] == "warn" and check["level"] == "ok"
        assert check["observedValue"] is None
        assert "no memory limit known" in check["output"]
        assert "MEMGUARD_MEMORY_LIMIT" in check["output"]
        assert any(note.startswith("no memory limit known") for note in body["notes"])
        assert metric(manager, "memguard_memory_limit_bytes") == {}
    finally:
        manager.stop()


# A real process, its real RSS, no policy and no container limit -------------------------

NO_LIMIT_SCRIPT = textwrap.dedent('''
    import json, sys
    from memguard import MemoryManager
    from memguard.web.payloads import health_payload

    manager = MemoryManager()  # the policy the environment gives: none, so the built-in one
    if len(sys.argv) > 1:
        manager.load_policy(sys.argv[1])
    manager.start()
    stats = manager.get_memory_stats()
    code, health = health_payload(manager)
    manager.stop()
    print(json.dumps({"policy_limit": manager.policy.memory.limit,
                      "sample": stats.sample.to_dict(), "level": stats.level,
                      "thresholds": stats.to_dict()["thresholds"],
                      "code": code, "health": health}))
''')


def run_without_limit(tmp_path: Path, *policy: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MEMGUARD_") and k not in ("JOB_RETENTION_MINUTES",
                                                          "MAX_JOBS_PER_STORE")}
    result = subprocess.run([sys.executable, "-c", NO_LIMIT_SCRIPT, *policy], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    data["stderr"] = result.stderr  # no logging set up: memguard's own lines land here
    return data


@pytest.fixture
def no_container_limit() -> None:
    if detect_limit() is not None:  # pragma: no cover - depends on the machine
        pytest.skip(f"this machine's cgroup sets a memory limit ({detect_limit()} bytes)")


@pytest.mark.usefixtures("no_container_limit")
def test_limit_auto_without_a_container_limit_knows_no_limit(tmp_path: Path) -> None:
    """The built-in policy (limit auto, thresholds 75/90/100%) in a process with no cgroup
    limit: no limit, so no threshold, level ok; never the machine's RAM."""
    data = run_without_limit(tmp_path)
    assert data["policy_limit"] == "auto"
    sample = data["sample"]
    assert isinstance(sample, dict)
    assert sample["limit"] is None and sample["utilization"] is None
    assert sample["scope"] == "process" and sample["usage"] > 0  # the real RSS
    assert data["thresholds"] == {"warning": None, "warning_heap": None, "emergency": None,
                                  "emergency_target": None, "critical": None, "limit": None}
    assert str(physical_memory()) not in json.dumps(data)  # not the machine's RAM, anywhere
    health = data["health"]
    assert isinstance(health, dict)
    assert (data["code"], health["status"]) == (200, "warn")
    assert any(note.startswith("no memory limit known") for note in health["notes"])
    (started,) = [line for line in str(data["stderr"]).splitlines()
                  if "Memory guard started" in line]  # one start-up line, saying what to set
    assert "policy <built-in>, no memory limit known" in started
    assert "set [memory] limit or MEMGUARD_MEMORY_LIMIT" in started
    assert started.endswith("scope process; no thresholds; no store registered yet")


@pytest.mark.usefixtures("no_container_limit")
def test_percentages_of_limit_auto_stay_off_and_sizes_still_apply(tmp_path: Path) -> None:
    percent = run_without_limit(tmp_path, '[memory]\nlimit = "auto"\nwarning = "1%"\n'
                                          'emergency = "2%"\nemergency_target = "1%"\n'
                                          'critical = "3%"\n')
    # Against the machine's RAM these would resolve to numbers; with no limit known, none does.
    assert percent["thresholds"] == {"warning": None, "warning_heap": None, "emergency": None,
                                     "emergency_target": None, "critical": None, "limit": None}
    assert percent["level"] == "ok"
    sizes = run_without_limit(tmp_path, '[memory]\nlimit = "auto"\nwarning = "1MB"\n'
                                        'emergency = "10GB"\nemergency_target = "9GB"\n'
                                        'critical = "20GB"\n')
    assert sizes["level"] == "warning"  # a Python process holds more than 1MB: sizes apply
    health = sizes["health"]
    assert isinstance(health, dict) and health["status"] == "warn"
