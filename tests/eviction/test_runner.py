"""The eviction runner (`memguard.eviction.runner`): one loop for inserts and passes alike."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from memguard import MaxJobs, MemoryManager, Policy, handle, managed_store
from memguard.eviction.events import Cause
from memguard.eviction.rules import Budget, Pass, Pipeline
from memguard.eviction.runner import apply_rule, run_pass
from memguard.index.job_index import JobIndex
from memguard.testing import FakeClock, capture_evictions


@pytest.fixture
def manager() -> MemoryManager:
    return MemoryManager(Policy(), clock=FakeClock(0.0))


def jobs_store(manager: MemoryManager, **options: Any) -> Any:
    @managed_store(name="jobs", manager=manager, **options)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    return Jobs()


def test_a_rule_naming_an_active_job_is_refused_then_stopped(
        manager: MemoryManager, caplog: pytest.LogCaptureFixture) -> None:
    store = jobs_store(manager)
    store["busy"] = {"status": "running"}
    store["done"] = {"status": "done"}
    asked = []

    def insistent(index: JobIndex, ctx: Pass) -> Iterator[tuple[Any, Cause]]:
        while True:  # a buggy rule: it asks for the running job forever
            asked.append("busy")
            yield "busy", Cause.EXPLICIT

    victims: list[Any] = []
    target = handle(store)
    with target.lock:
        apply_rule(insistent, target, Pass(now=0.0), victims)
    assert victims == [] and len(asked) == 2  # refused once, stopped the second time
    assert "keeps naming job 'busy'" in caplog.text
    assert sorted(store) == ["busy", "done"]


def test_an_emergency_budget_is_spent_by_victim_sizes(manager: MemoryManager) -> None:
    store = jobs_store(manager, size=lambda job: job["size"])
    for i in range(5):
        store[f"j{i}"] = {"status": "done", "size": 100}
    budget = Budget(250)
    from memguard import Emergency

    events = run_pass(Pipeline((Emergency(),)), handle(store), Pass(now=0.0, budget=budget))
    assert [e.key for e in events] == ["j0", "j1", "j2"]  # 300 >= 250: it stops there
    assert budget.remaining == -50


def test_run_pass_isolates_a_failing_rule_and_notifies_outside_the_lock(
        manager: MemoryManager, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="memguard")
    store = jobs_store(manager)
    for i in range(4):
        store[f"j{i}"] = {"status": "done"}
    target = handle(store)
    seen_locked = []
    manager.on_evict(lambda event: seen_locked.append(target.lock._is_owned()))  # type: ignore[attr-defined]

    def broken(index: JobIndex, ctx: Pass) -> Iterator[tuple[Any, Cause]]:
        raise RuntimeError("broken rule")

    with capture_evictions(manager) as events:
        run_pass(Pipeline((broken, MaxJobs(2))), target, Pass(now=0.0))
    assert [e.key for e in events] == ["j0", "j1"]  # the next rule still ran
    assert seen_locked == [False, False]
    assert "broken rule" in caplog.text


def test_inserts_go_through_the_same_runner(manager: MemoryManager) -> None:
    store = jobs_store(manager, max_jobs=1)
    store["a"] = {"status": "running"}
    store["b"] = {"status": "done"}  # over the bound, but the only other job is active
    store["c"] = {"status": "done"}  # b goes: the job just written is never the victim
    assert sorted(store) == ["a", "c"]
