"""The rules and the pipeline: age, idle, count, bytes, composition, orders, active jobs."""

from __future__ import annotations

from typing import Any

import pytest

from memguard import (
    Cause,
    MaxAge,
    MaxBytes,
    MaxIdle,
    MaxJobs,
    MemoryManager,
    Pipeline,
    handle,
    managed_store,
)
from memguard.eviction.rules import Pass
from memguard.testing import FakeClock, capture_evictions


def done(result: Any = "r") -> dict[str, Any]:
    return {"status": "done", "result": result}


def make_store(manager: MemoryManager, **options: Any) -> Any:
    @managed_store(**{"manager": manager, **options})
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    return Jobs()


def test_max_age_is_absolute_from_creation(manager: MemoryManager, clock: FakeClock) -> None:
    store = make_store(manager, max_age=60)
    store["a"] = done()
    clock.advance(30)
    store["b"] = done()
    clock.advance(29)
    store["a"]  # touching does not extend age
    assert handle(store).cleanup().evicted == 0
    clock.advance(2)
    report = handle(store).cleanup()
    assert report.by_cause == {"age": 1}
    assert list(store) == ["b"]


def test_max_idle_slides_with_touches_at_pass_granularity(
        manager: MemoryManager, clock: FakeClock) -> None:
    store = make_store(manager, max_idle=60)
    store["a"] = done()
    store["b"] = done()
    handle(store).cleanup()  # lays an epoch at t=0
    clock.advance(50)
    store["a"]  # a touched after that epoch
    handle(store).cleanup()  # epoch at t=50
    clock.advance(15)  # t=65: b idle since <= 0, a touched in (0, 50]
    assert handle(store).cleanup().by_cause == {"idle": 1}
    assert list(store) == ["a"]
    clock.advance(50)  # t=115: a's last touch <= 50, so idle >= 65
    assert handle(store).cleanup().by_cause == {"idle": 1}
    assert list(store) == []


def test_rules_compose_with_or_and_accept_plain_callables() -> None:
    def failed_jobs(index: Any, ctx: Pass) -> Any:
        return iter(())

    pipeline = MaxAge("20m") | MaxJobs(50) | failed_jobs
    assert isinstance(pipeline, Pipeline)
    assert pipeline.rules == (MaxAge(1200.0), MaxJobs(50), failed_jobs)
    assert (pipeline | MaxIdle(60)).rules[-1] == MaxIdle(60.0)
    assert "MaxAge(seconds=1200.0)" in repr(pipeline)


@pytest.mark.parametrize("bad", [0, -1, "soon", True])
def test_rule_options_are_validated(bad: Any) -> None:
    with pytest.raises(ValueError):
        MaxJobs(bad)
    with pytest.raises(ValueError):
        MaxAge(bad if bad != 0 else -1)


@pytest.mark.parametrize(
    ("order", "survivors"),
    [("lru", ["b", "d"]), ("oldest", ["c", "d"]), ("largest", ["a", "d"])],
)
def test_orders_choose_who_goes(manager: MemoryManager, order: str,
                                survivors: list[str]) -> None:
    store = make_store(manager, order=order)
    store["a"] = done("x" * 10)
    store["b"] = done("x" * 5000)
    store["c"] = done("x" * 3000)
    store["d"] = done("x")
    store["b"], store["d"]  # lru: a and c are least recently used
    handle(store).declare(max_jobs=2)
    store["d"] = done("x")  # an insert enforces the bound
    assert sorted(store) == survivors


def test_max_bytes_evicts_until_under(manager: MemoryManager) -> None:
    store = make_store(manager, max_bytes=25_000)
    for key in "abcd":
        store[key] = done("x" * 10_000)
    assert sorted(store) == ["c", "d"]
    assert handle(store).index.total_bytes <= 25_000


def test_bytes_of_jobs_that_finish_are_weighed_at_the_next_pass(
        manager: MemoryManager) -> None:
    store = make_store(manager, max_bytes=25_000)
    for key in "abcd":
        store[key] = {"status": "running", "result": None}
    for key in "abcd":
        store[key]["status"] = "done"  # in-place: the store cannot see it
        store[key]["result"] = "x" * 10_000
    assert handle(store).index.total_bytes == 0
    report = handle(store).cleanup()
    assert report.by_cause == {"bytes": 2}
    assert sorted(store) == ["c", "d"]


def test_active_jobs_survive_every_rule(manager: MemoryManager, clock: FakeClock) -> None:
    store = make_store(manager, max_age=10, max_idle=5, max_jobs=1, max_bytes=1)
    store["run"] = {"status": "running", "result": "x" * 1000}
    store["pend"] = {"status": "pending"}
    handle(store).pin("pin")  # a key can be pinned before it is stored
    store["pin"] = done("x" * 1000)
    for _ in range(3):
        clock.advance(100)
        handle(store).cleanup()
    assert manager.evict_bytes(10**9) == []
    assert sorted(store) == ["pend", "pin", "run"]


def test_custom_active_predicate(manager: MemoryManager) -> None:
    store = make_store(manager, max_jobs=2, active=lambda job: job.get("busy", False))
    store["a"] = {"busy": True}
    store["b"] = {"busy": False}
    store["c"] = {"busy": False}
    assert sorted(store) == ["a", "c"]


def test_an_unhashable_status_is_no_known_status_on_every_path(
        manager: MemoryManager, caplog: pytest.LogCaptureFixture) -> None:
    """A status that cannot be looked up (a list) is not an active one: the default
    predicate says so quietly, on the write path and on the scans alike, and the job is
    never marked as one whose predicate failed."""
    store = make_store(manager, max_jobs=2)
    store["listed"] = {"status": ["running"], "result": "x"}  # written: the write path's test
    store["run"] = {"status": "running"}
    store["new"] = done()  # over the bound: the scan looks at "listed" and "run"
    assert sorted(store) == ["new", "run"]
    store["again"] = {"status": "running"}
    store["again"]["status"] = ["done"]  # changed in place: only a scan sees it
    handle(store).cleanup()
    manager.evict_bytes(10**9)
    assert sorted(store) == ["run"]
    index = handle(store).index  # type: ignore[attr-defined]
    assert not index.failed and "predicate raised" not in caplog.text


def test_a_failing_rule_is_logged_and_the_pass_goes_on(
        manager: MemoryManager, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    store = make_store(manager, max_age=1)
    h = handle(store)

    def broken(index: Any, ctx: Pass) -> Any:
        raise RuntimeError("rule exploded")

    object.__setattr__(h, "pipeline", Pipeline((broken,)) | h.pipeline)
    store["a"] = done()
    clock.advance(5)
    assert h.cleanup().by_cause == {"age": 1}
    assert "rule exploded" in caplog.text


def test_emergency_budget_spans_stores_and_stops_when_spent(manager: MemoryManager) -> None:
    big = make_store(manager, name="big")
    small = make_store(manager, name="small")
    for i in range(10):
        big[f"b{i}"] = done("x" * 10_000)
        small[f"s{i}"] = done("x" * 1_000)
    handle(big).cleanup(), handle(small).cleanup()
    with capture_evictions(manager) as events:
        manager.evict_bytes(35_000)
    assert all(e.cause is Cause.EMERGENCY for e in events)
    freed = sum(e.size or 0 for e in events)
    assert 35_000 <= freed < 35_000 + 11_000
    # one order across stores (the default `delivered`): nothing read, so oldest finished
    # first, whichever store holds it
    interleaved = [key for i in range(10) for key in (f"b{i}", f"s{i}")]
    keys = [e.key for e in events]
    assert keys == interleaved[:len(keys)] and "s1" in keys
    gone = len(keys) // 2
    assert len(small) == 10 - gone and len(big) == 10 - (len(keys) - gone)


def test_cleanup_report_summary_and_dict(manager: MemoryManager, clock: FakeClock) -> None:
    store = make_store(manager, max_age=1, name="diagram")
    store["a"] = done("x" * 2048)
    clock.advance(2)
    report = manager.run_cleanup()
    assert report.summary().startswith("Cleaned 1 job from diagram (age=1), freed ~2.")
    data = report.to_dict()
    assert data["evicted"] == 1 and data["by_cause"] == {"age": 1}
    assert data["freed_estimate_bytes"] >= 2048


def test_max_bytes_rule_alone(manager: MemoryManager) -> None:
    assert MaxBytes("1KB") == MaxBytes(1024)
