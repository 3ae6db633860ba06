"""The seed's story told through the public API only (DESIGN section 2)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Optional

import pytest

import memguard
from memguard import (
    Cause,
    MaxAge,
    MaxJobs,
    MemoryManager,
    PolicyError,
    StoreDefinitionError,
    handle,
    load_policy,
    managed_store,
    touches,
)
from memguard.testing import FakeClock, FakeProbe, capture_evictions

POLICY = """
[memory]
limit = "512MB"
warning = "400MB"
emergency = "500MB"
emergency_target = "400MB"
critical = "600MB"

[defaults]
max_age = "30m"

[stores.diagram]
max_age = "20m"
max_jobs = 3
"""


def build(manager: MemoryManager) -> tuple[Any, Any]:
    @managed_store(max_age="20m", max_jobs=50, name="diagram", manager=manager)
    class DiagramJobs(dict):  # type: ignore[type-arg]
        pass

    @managed_store(name="iac", mapping="jobs", manager=manager)
    class IacJobStore:
        def __init__(self) -> None:
            self.jobs: dict[str, Any] = {}

        @touches
        def get_job(self, job_id: str) -> Optional[dict[str, Any]]:
            return self.jobs.get(job_id)

        @touches(key="job_id")
        async def poll(self, *, job_id: str) -> Optional[dict[str, Any]]:
            return self.jobs.get(job_id)

    return DiagramJobs(), IacJobStore()


def result(megabytes: float) -> str:
    return "x" * int(megabytes * 2**20)


def test_the_seed_story() -> None:
    clock = FakeClock()
    probe = FakeProbe("300MB", limit="512MB")
    manager = MemoryManager(load_policy(POLICY), clock=clock, probe=probe)
    diagrams, iac = build(manager)
    assert set(manager.stores) == {"diagram", "iac"}
    assert handle(diagrams).policy.max_jobs == 3  # [stores.diagram] beats the decorator
    assert handle(iac).policy.max_age == 30 * 60  # [defaults] applies to undeclared values

    with capture_evictions(manager) as events:
        for n in range(5):
            diagrams[f"d{n}"] = {"status": "done", "result": result(0.1)}
        iac.jobs["running"] = {"status": "running", "result": None}
        iac.jobs["old"] = {"status": "done", "result": result(0.5)}
        held = iac.get_job("old")
        assert [e.key for e in events] == ["d0", "d1"]  # count bound enforced on insert
        assert {e.cause for e in events} == {Cause.COUNT}

        clock.advance(25 * 60)
        asyncio.run(iac.poll(job_id="old"))  # a touch never extends max_age
        report = manager.run_cleanup()
        assert report.by_store == {"diagram": {"age": 3}}
        clock.advance(6 * 60)
        report = manager.run_cleanup()
        assert report.by_store == {"iac": {"age": 1}}
        assert held is not None and held["result"] is None  # released though still held
        assert list(iac.jobs) == ["running"]  # active jobs are never evicted

        iac.jobs["big"] = {"status": "done", "result": result(1)}
        probe.set("505MB")
        emergency = manager.emergency_cleanup()
        assert emergency.kind == "emergency"
        assert emergency.by_cause.get("emergency") == 1
        assert "running" in iac.jobs
        json.dumps(emergency.to_dict())

    stats = manager.get_memory_stats()
    assert json.loads(json.dumps(stats.to_dict()))
    assert [event.to_dict()["cause"] for event in events][-1] == "emergency"


def test_rules_compose_and_plain_dicts_are_managed() -> None:
    clock = FakeClock()
    manager = MemoryManager(clock=clock)
    jobs: dict[str, Any] = {}
    manager.setup_job_store_cleanup(jobs, "legacy", max_age="10m", max_jobs=2)
    jobs["a"] = {"status": "done", "result": "r"}
    manager.touch_job(jobs, "a")  # a plain dict's job is known from its first touch or pass
    clock.advance(11 * 60)
    jobs["b"] = {"status": "done", "result": "r"}
    assert manager.run_cleanup().by_store == {"legacy": {"age": 1}}
    assert list(jobs) == ["b"]
    clock.advance(11 * 60)  # b was first seen by that pass: its age counts from there
    assert manager.run_cleanup().by_store == {"legacy": {"age": 1}}
    assert (MaxAge("20m") | MaxJobs(50)).rules == (MaxAge(1200), MaxJobs(50))


def test_errors_name_the_problem(tmp_path: Any) -> None:
    with pytest.raises(StoreDefinitionError, match="neither a dict nor a MutableMapping"):
        managed_store(type("Nothing", (), {}))
    bad = tmp_path / "bad.toml"
    bad.write_text('[stores.diagram]\nmax_age = "twenty minutes"\n')
    with pytest.raises(PolicyError) as caught:
        load_policy(bad)
    error = caught.value
    assert (error.source, error.line, error.key) == (str(bad), 2, "stores.diagram.max_age")
    assert "twenty minutes" in str(error)


def test_a_failed_reload_keeps_the_previous_policy() -> None:
    manager = MemoryManager(load_policy(POLICY))
    diagrams, _ = build(manager)
    with pytest.raises(PolicyError):
        manager.load_policy("[stores.diagram]\nmax_jobs = -1\n")
    assert handle(diagrams).policy.max_jobs == 3
    manager.load_policy("[stores.diagram]\nmax_jobs = 7\n")
    assert handle(diagrams).policy.max_jobs == 7


def test_public_names_are_exported() -> None:
    for name in ("managed_store", "touches", "handle", "StoreHandle", "MemoryManager",
                 "manager", "load_policy", "Policy", "MemoryPolicy", "StorePolicy", "Cause",
                 "CleanupReport", "EvictionEvent", "MemorySample", "MemoryStats", "MaxAge",
                 "MaxIdle", "MaxJobs", "MaxBytes", "Emergency", "MemguardError",
                 "PolicyError", "StoreDefinitionError"):
        assert hasattr(memguard, name), name
    assert memguard.__all__ == sorted(memguard.__all__)
