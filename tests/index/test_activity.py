"""Active and pinned jobs in the index (`memguard.index.activity`), with many of them: inserts
and passes do bounded work, stats never call the predicate, a raising predicate is survived,
pins of absent keys cost nothing (issue 12, items 3, 4, 5 and 10).

Work is asserted by counting calls of the active predicate, never by timing.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import hypothesis.strategies as st
import pytest
from counting import counted_store
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from memguard import MemoryManager, Policy, handle, managed_store
from memguard.index import job_index as tracking
from memguard.index.job_index import PARK_AFTER, RECHECK_PER_PASS
from memguard.index.marks import Epoch
from memguard.testing import FakeClock, capture_evictions


@pytest.fixture
def manager() -> MemoryManager:
    return MemoryManager(Policy(), clock=FakeClock(0.0))




# -- 3. inserts and passes with many active jobs ---------------------------------------------


def test_inserts_into_a_store_full_of_active_jobs_do_bounded_work(
        manager: MemoryManager) -> None:
    per_insert = []
    for count in (1000, 4000):
        store, active = counted_store(manager, max_jobs=10)
        for i in range(count):
            store[i] = {"status": "queued"}
        per_insert.append(active.calls / count)
        assert len(store) == count  # nothing evictable: every job is active
    # the work per insert does not grow with the number of active jobs ...
    assert per_insert[1] <= per_insert[0] + 1
    # ... and is bounded by the jobs a scan steps over before parking the others
    assert per_insert[1] <= PARK_AFTER + 8


def test_passes_over_active_jobs_look_at_a_bounded_batch(manager: MemoryManager) -> None:
    store, active = counted_store(manager, max_jobs=10, max_age="1m")
    for i in range(4000):
        store[i] = {"status": "running"}
    manager.clock.advance(3600)  # type: ignore[attr-defined]
    active.calls = 0
    handle(store).cleanup()
    assert active.calls <= RECHECK_PER_PASS + 2 * PARK_AFTER + 8
    assert len(store) == 4000


def test_jobs_that_finish_in_place_are_evicted_within_bounded_passes(
        manager: MemoryManager) -> None:
    store, _ = counted_store(manager, max_jobs=10)
    for i in range(4000):
        store[i] = {"status": "queued"}
    for job in store.values():
        job["status"] = "done"  # in place, as apps do: no write memguard sees
    handle(store).cleanup()  # finished jobs do not count against the pass's batch
    assert len(store) == 10
    assert handle(store).stats().active == 0


def test_a_small_store_keeps_its_exact_lru_order(manager: MemoryManager) -> None:
    store, _ = counted_store(manager, max_jobs=3)
    running = {"status": "running"}
    store["run"] = running
    store["a"] = {"status": "done"}
    store["b"] = {"status": "done"}
    running["status"] = "done"  # finished in place, least recently used
    store["c"] = {"status": "done"}
    assert sorted(store) == ["a", "b", "c"]


def test_the_recheck_order_does_not_grow_without_passes(manager: MemoryManager) -> None:
    store, _ = counted_store(manager)  # no bound, no pass: nothing ever re-checks
    for i in range(10_000):
        store[i] = {"status": "running"}
        store[i] = {"status": "done"}  # finished by a rewrite
    index = handle(store).index
    assert len(index.known_active) == 0
    assert len(index.rotation) <= 64


# -- 4. stats without a scan -----------------------------------------------------------------


def test_stats_call_no_predicate(manager: MemoryManager) -> None:
    store, active = counted_store(manager)
    for i in range(5000):
        store[i] = {"status": "running" if i % 10 else "done", "result": "x"}
    handle(store).pin(1)
    handle(store).pin("absent")
    active.calls = 0
    stats = handle(store).stats()
    assert active.calls == 0
    assert (stats.jobs, stats.active, stats.pinned) == (5000, 4500, 1)


# -- 5. a status that raises ----------------------------------------------------------------


class Broken(dict):  # type: ignore[type-arg]
    def get(self, key: Any, default: Any = None) -> Any:
        raise RuntimeError("status service down")


def test_a_raising_status_warns_once_per_job_and_does_not_pin_it(
        manager: MemoryManager, caplog: pytest.LogCaptureFixture) -> None:
    @managed_store(manager=manager, max_jobs=10)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    caplog.set_level(logging.WARNING, logger="memguard")
    for i in range(300):
        store[f"broken{i}"] = Broken(result="x")
    for i in range(300):
        store[f"ok{i}"] = {"status": "done"}
    handle(store).stats()
    handle(store).cleanup()
    records = [r for r in caplog.records if "active predicate raised" in r.getMessage()]
    assert len(records) == 300  # one per job, not one per look
    assert all(r.exc_info is None for r in records)  # no traceback
    assert len(store) == 10  # they count as not active: the bound holds


def test_pins_of_absent_keys_are_not_counted_and_the_table_shrinks(
        manager: MemoryManager) -> None:
    store, _ = counted_store(manager)
    store["a"] = {"status": "done"}
    h = handle(store)
    h.pin("nobody")
    h.pin("a")
    assert h.stats().pinned == 1
    h.unpin("nobody")
    h.unpin("a")
    before = sys.getsizeof(h.index.pins)
    for i in range(50_000):
        h.pin(i)
    for i in range(50_000):
        h.unpin(i)
    assert h.stats().pinned == 0
    assert sys.getsizeof(h.index.pins) <= before


# -- 3/4. parking and re-checks, driven by hypothesis -------------------------------------------

PARK_KEYS = st.integers(min_value=0, max_value=15)


class ParkingMachine(RuleBasedStateMachine):
    """A store where scans park after stepping over one active job, against a plain model:
    the index stays exact, no active job is ever evicted, and a pass (which re-checks every
    known-active job of a small store) restores the count bound and the active count."""

    MAX_JOBS = 4
    most_parked = 0  # over every example: the machine must have parked something

    def __init__(self) -> None:
        super().__init__()
        self.manager = MemoryManager(Policy(), clock=FakeClock(0.0))

        @managed_store(manager=self.manager, max_jobs=self.MAX_JOBS)
        class Jobs(dict):  # type: ignore[type-arg]
            pass

        self.store = Jobs()
        self.handle = handle(self.store)
        self.model: dict[int, dict[str, Any]] = {}
        self.pins: dict[int, int] = {}
        self.capture = capture_evictions(self.manager)
        self.events = self.capture.__enter__()
        self.seen = 0

    def teardown(self) -> None:
        self.capture.__exit__(None, None, None)

    def active(self, key: int) -> bool:
        return key in self.pins or self.model[key]["status"] == "running"

    def absorb(self) -> None:
        for event in self.events[self.seen:]:
            assert event.key in self.model and not self.active(event.key), event
            del self.model[event.key]
        self.seen = len(self.events)

    @rule(key=PARK_KEYS, running=st.booleans())
    def insert(self, key: int, running: bool) -> None:
        job = {"status": "running" if running else "done", "result": "x" * 50}
        self.store[key] = job
        self.model[key] = job
        self.absorb()

    @rule(key=PARK_KEYS)
    def finish(self, key: int) -> None:
        if key in self.model:
            self.model[key]["status"] = "done"  # in place

    @rule(key=PARK_KEYS)
    def read(self, key: int) -> None:
        self.store.get(key)

    @rule(key=PARK_KEYS)
    def delete(self, key: int) -> None:
        if self.store.pop(key, None) is not None:
            del self.model[key]
            self.pins.pop(key, None)

    @rule(key=PARK_KEYS)
    def pin(self, key: int) -> None:
        if key in self.model:
            self.handle.pin(key)
            self.pins[key] = self.pins.get(key, 0) + 1

    @rule(key=PARK_KEYS)
    def unpin(self, key: int) -> None:
        if key in self.pins:
            self.handle.unpin(key)
            self.pins[key] -= 1
            if not self.pins[key]:
                del self.pins[key]

    @rule()
    def cleanup(self) -> None:
        self.handle.cleanup()
        self.absorb()
        evictable = [k for k in self.model if not self.active(k)]
        assert len(self.model) <= self.MAX_JOBS or not evictable
        assert self.handle.stats().active == sum(map(self.active, self.model))
        parked = self.handle.index.parked
        assert all(self.active(k) for k in parked), "a finished job stayed parked after a pass"

    @invariant()
    def index_is_exact(self) -> None:
        index = self.handle.index
        ParkingMachine.most_parked = max(ParkingMachine.most_parked, len(index.parked))
        assert dict(self.store) == self.model
        assert set(index.keys()) == set(self.model)
        in_order = [k for k in index.lru if not isinstance(k, Epoch)]
        assert sorted(in_order + list(index.parked)) == sorted(self.model)
        assert set(index.aged) == set(self.model) - set(index.parked)
        assert index.total_bytes == sum(index.size_of(k) or 0 for k in self.model)
        assert set(index.known_active) <= set(self.model)
        assert index.pinned_jobs == len(self.pins)
        assert self.handle.stats().pinned == len(self.pins)


def test_parking_and_rechecks_keep_the_index_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "PARK_AFTER", 1)
    run = ParkingMachine.TestCase
    run.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
    run().runTest()
    assert ParkingMachine.most_parked >= 2
