"""Soft bounds (`bounds = "soft"`, DESIGN section 10): a job past max_age, max_idle, max_jobs
or max_bytes stays while there is room, and goes first at a pass at or above `warning`, at a
write under that pressure, or in an emergency; `max_age_hard` stays a deadline."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memguard import MemoryManager, PolicyError, handle, managed_store
from memguard.errors import StoreDefinitionError
from memguard.eviction.events import Cause
from memguard.eviction.plan import plan_for
from memguard.eviction.rules import Budget, Pass
from memguard.monitor.thread import Monitor
from memguard.policy.options import StorePolicy
from memguard.policy.policy import Policy
from memguard.testing import FakeClock, FakeProbe, FakeReclaim, capture_evictions

MB = 1024 * 1024
POLICY = """
[memory]
limit = "512MB"
warning = "400MB"
emergency = "500MB"
emergency_target = "300MB"
critical = "600MB"
check_interval = "1h"
[defaults]
bounds = "soft"
"""


def done(size: int = 10) -> dict[str, Any]:
    return {"status": "done", "result": "x" * size}


def guarded(usage: str = "100MB", policy: str = POLICY) -> tuple[MemoryManager, FakeClock,
                                                                 FakeProbe, Monitor]:
    """A manager on a fake clock whose monitor reads `probe` (driven by `tick`, no thread)."""
    clock, probe = FakeClock(1000.0), FakeProbe(usage, "512MB")
    manager = MemoryManager(Policy.from_toml(policy), clock=clock, probe=probe,
                            reclaim=FakeReclaim())
    manager.monitor = monitor = Monitor(manager)
    monitor.tick()  # the first tick's pass: the periodic pass is then an hour away
    return manager, clock, probe, monitor


def store_of(manager: MemoryManager, **options: Any) -> Any:
    @managed_store(manager=manager, **options)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    return Jobs()


def test_jobs_past_soft_bounds_stay_while_there_is_room() -> None:
    manager, clock, _, monitor = guarded()
    store = store_of(manager, max_jobs=2, max_age="10m")
    for key in "abcd":
        store[key] = done()
    clock.advance(3600)
    monitor.tick()
    assert manager.run_cleanup().evicted == 0
    store["e"] = done()
    assert sorted(store) == ["a", "b", "c", "d", "e"]


def test_a_pass_at_warning_evicts_what_is_past_a_soft_bound_oldest_first() -> None:
    manager, clock, probe, monitor = guarded()
    store = store_of(manager, max_jobs=3, max_age="10m")
    store["old"] = done()
    clock.advance(700)  # "old" is past max_age from now on
    for key in "abcd":
        store[key] = done()
    store["a"]  # read: the least recently used of the young ones is now "b"
    probe.set("410MB")
    monitor.tick()
    assert manager.under_pressure()
    with capture_evictions(manager) as events:
        manager.run_cleanup()
    assert [(e.key, e.cause) for e in events] == [("old", Cause.AGE), ("b", Cause.COUNT)]
    assert sorted(store) == ["a", "c", "d"]


def test_a_write_under_pressure_cuts_its_store_back_at_once() -> None:
    manager, _, probe, monitor = guarded()
    store = store_of(manager, max_jobs=2)
    for key in "abc":
        store[key] = done()
    probe.set("420MB")
    monitor.tick()
    store["d"] = done()
    assert sorted(store) == ["c", "d"]
    probe.set("100MB")
    monitor.tick()
    store["e"] = done()
    assert sorted(store) == ["c", "d", "e"]


def test_an_emergency_takes_soft_expired_jobs_first_and_only_what_it_needs() -> None:
    manager, clock, _, _ = guarded()
    store = store_of(manager, max_age="10m", size=lambda job: 100)
    for key in "abc":
        store[key] = done()
    clock.advance(601)
    store["young"] = done()
    h = handle(store)
    events = h.run_pass(Pass(now=clock(), budget=Budget(150)))
    assert [(e.key, e.cause) for e in events] == [("a", Cause.AGE), ("b", Cause.AGE)]
    assert sorted(store) == ["c", "young"]


def test_max_age_hard_stays_a_deadline_with_room_to_spare() -> None:
    manager, clock, _, monitor = guarded()
    store = store_of(manager, max_age="10m", max_age_hard="1h")
    store["a"] = done()
    clock.advance(1800)
    store["b"] = done()
    monitor.tick()
    assert manager.run_cleanup().evicted == 0
    clock.advance(1801)
    report = manager.run_cleanup()
    assert report.by_cause == {"age": 1}
    assert list(store) == ["b"]


def test_hard_bounds_keep_the_seed_behaviour_and_take_the_sooner_deadline() -> None:
    plan = plan_for(StorePolicy(max_age=3600, max_age_hard=600, max_jobs=5))
    assert not plan.soft and plan.max_age == 600 and plan.insert_rules and not plan.soft_rules
    soft = plan_for(StorePolicy(max_age=3600, max_age_hard=600, max_jobs=5, bounds="soft"))
    assert soft.soft and soft.max_age == 3600 and soft.max_age_hard == 600
    assert not soft.insert_rules and not soft.over(100, 10**9)


def test_soft_expired_is_an_ordered_source_for_the_global_order() -> None:
    manager, clock, _, _ = guarded()
    store = store_of(manager, max_age="10m", max_jobs=3)
    for key in ("a", "b"):
        store[key] = done()
    clock.advance(601)
    for key in ("c", "d", "e"):
        store[key] = {"status": "running"} if key == "c" else done()
    h = handle(store)
    taken = []
    with h.lock:
        for key, cause in h.soft_expired(clock()):
            taken.append((key, cause))
            h.evict_locked(key, cause)
    assert taken == [("a", Cause.AGE), ("b", Cause.AGE)]  # 3 jobs left: within max_jobs
    hard = store_of(manager, name="hard_jobs", max_age="10m", bounds="hard")
    hard["x"] = done()
    assert list(handle(hard).soft_expired(clock() + 10**6)) == []


def test_bad_bounds_are_refused_with_what_is_allowed() -> None:
    with pytest.raises(PolicyError, match=r'bounds.*did you mean "soft"'):
        Policy.from_toml('[defaults]\nbounds = "sfot"\n')
    with pytest.raises(PolicyError, match=r"stores.x.max_age_hard"):
        Policy.from_toml('[stores.x]\nmax_age_hard = "soon"\n')
    with pytest.raises(StoreDefinitionError, match=r'bounds="firm".*one of "hard", "soft"'):
        store_of(MemoryManager(), bounds="firm")
    explained = Policy.from_toml(POLICY, source="p.toml").explain("any")
    assert explained["bounds"] == ("soft", "p.toml:10")


operations = st.lists(st.one_of(
    st.tuples(st.just("put"), st.integers(0, 12), st.booleans()),
    st.tuples(st.just("read"), st.integers(0, 12)),
    st.tuples(st.just("wait"), st.integers(1, 900)),
    st.tuples(st.just("pass"), st.integers(0, 480)),
    st.tuples(st.just("emergency"), st.integers(1, 5000)),
), max_size=40)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_a_soft_store_never_evicts_below_warning_unless_an_emergency_asks(
        ops: list[tuple[Any, ...]]) -> None:
    manager, clock, probe, monitor = guarded()
    store = store_of(manager, max_jobs=3, max_age="5m", max_idle="2m", max_bytes=2000,
                     size=lambda job: 500)
    with capture_evictions(manager) as events:
        for op in ops:
            before = len(events)
            allowed = False
            if op[0] == "put":
                store[f"k{op[1]}"] = done() if op[2] else {"status": "running"}
                allowed = manager.under_pressure()
            elif op[0] == "read":
                store.get(f"k{op[1]}")
            elif op[0] == "wait":
                clock.advance(op[1])
            elif op[0] == "pass":
                probe.set(op[1] * MB)
                monitor.tick()
                manager.run_cleanup()
                allowed = op[1] >= 400
            else:
                manager.evict_bytes(op[1])
                allowed = True
            if not allowed:
                assert len(events) == before, f"evicted below warning: {events[before:]}"
            for event in events[before:]:
                assert event.cause in (Cause.AGE, Cause.IDLE, Cause.COUNT, Cause.BYTES,
                                       Cause.EMERGENCY)


def test_the_write_that_crosses_warning_cuts_and_gives_back_at_once() -> None:
    clock, probe = FakeClock(1000.0), FakeProbe("395MB", "512MB")  # within 3% of warning
    reclaim = FakeReclaim(then=lambda: probe.set("380MB"))
    manager = MemoryManager(Policy.from_toml(POLICY), clock=clock, probe=probe,
                            reclaim=reclaim)
    manager.monitor = monitor = Monitor(manager)
    monitor.tick()
    store = store_of(manager, max_jobs=2)
    for key in "abc":
        store[key] = done()
    assert monitor.level == "ok" and sorted(store) == ["a", "b", "c"]
    calls = reclaim.calls
    probe.set("405MB")  # the monitor has not seen it yet; this write reads memory afresh
    clock.advance(1)
    store["d"] = done()
    assert sorted(store) == ["c", "d"] and reclaim.calls == calls + 1
    # far from warning at the last sample, a write trusts the monitor's level
    probe.set("300MB")
    clock.advance(1)
    monitor.tick()
    probe.set("405MB")
    clock.advance(1)
    for key in "ef":
        store[key] = done()
    assert sorted(store) == ["c", "d", "e", "f"]


def test_a_store_cleanup_enforces_soft_bounds_only_under_pressure() -> None:
    manager, _, probe, monitor = guarded()
    store = store_of(manager, max_jobs=1)
    for key in "ab":
        store[key] = done()
    assert handle(store).cleanup().evicted == 0
    probe.set("450MB")
    monitor.tick()
    assert handle(store).cleanup().by_cause == {"count": 1}
    assert list(store) == ["b"]
