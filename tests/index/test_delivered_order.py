"""`order = "delivered"` against a reference model, driven by hypothesis.

The model is the obvious O(n) reading of DESIGN section 9: a recency list of every job and a
second recency list of the finished jobs read since they were seen finished; a bound evicts
the evictable delivered jobs (least recently read first), then the rest in LRU order. Status
changes go through writes here (and pins), so "seen finished" is exact: a job written
finished and not pinned at its write, or finished at its last unpin.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from memguard import Emergency, MemoryManager, Policy, handle, managed_store
from memguard.testing import FakeClock, capture_evictions

KEYS = st.sampled_from([f"job{i}" for i in range(10)])
STATUS = st.sampled_from(["done", "done", "failed", "running", "pending"])
MAX_JOBS = 5


class DeliveredOrderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.manager = MemoryManager(clock=FakeClock(0.0))

        @managed_store(manager=self.manager, max_jobs=MAX_JOBS, order="delivered")
        class Jobs(dict):  # type: ignore[type-arg]
            pass

        self.store = Jobs()
        self.handle = handle(self.store)
        self.status: dict[str, str] = {}
        self.recency: list[str] = []
        self.delivered: list[str] = []  # finished jobs read since seen finished, by last read
        self.seen_finished: set[str] = set()
        self.pins: dict[str, int] = {}
        self.events_cm = capture_evictions(self.manager)
        self.events = self.events_cm.__enter__()

    def teardown(self) -> None:
        self.events_cm.__exit__(None, None, None)

    # -- the model ---------------------------------------------------------------------

    def finished(self, key: str) -> bool:
        return self.status[key] not in ("running", "pending")

    def evictable(self, key: str, writing: str) -> bool:
        return self.finished(key) and key not in self.pins and key != writing

    def expected_victims(self, writing: str) -> list[str]:
        """What the bound must evict after `writing` was stored, in order."""
        excess = len(self.status) - MAX_JOBS
        if excess <= 0:
            return []
        first = [k for k in self.delivered if self.evictable(k, writing)]
        rest = [k for k in self.recency if self.evictable(k, writing) and k not in self.delivered]
        return (first + rest)[:excess]

    def forget(self, key: str) -> None:
        del self.status[key]
        self.recency.remove(key)
        if key in self.delivered:
            self.delivered.remove(key)
        self.seen_finished.discard(key)
        self.pins.pop(key, None)

    # -- rules -------------------------------------------------------------------------

    @rule(key=KEYS, status=STATUS)
    def write(self, key: str, status: str) -> None:
        self.status[key] = status
        if key in self.recency:
            self.recency.remove(key)
        self.recency.append(key)
        if key in self.delivered:
            self.delivered.remove(key)
        if self.finished(key) and key not in self.pins:
            self.seen_finished.add(key)
        else:
            self.seen_finished.discard(key)
        expected = self.expected_victims(writing=key)
        before = len(self.events)
        self.store[key] = {"status": status, "result": "x" * 64}
        got = [str(event.key) for event in self.events[before:]]
        assert got == expected, f"evicted {got}, the model says {expected}"
        for victim in got:
            self.forget(victim)

    @rule(key=KEYS, through_get=st.booleans())
    def read(self, key: str, through_get: bool) -> None:
        if key not in self.status:
            assert self.store.get(key) is None
            return
        job = self.store.get(key) if through_get else self.store[key]
        assert job["status"] == self.status[key]
        self.recency.remove(key)
        self.recency.append(key)
        if key in self.seen_finished:
            if key in self.delivered:
                self.delivered.remove(key)
            self.delivered.append(key)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        if key in self.status:
            del self.store[key]
            self.forget(key)

    @rule(key=KEYS)
    def pin(self, key: str) -> None:
        if key in self.status:
            self.handle.pin(key)
            self.pins[key] = self.pins.get(key, 0) + 1

    @rule(key=KEYS)
    def unpin(self, key: str) -> None:
        if key in self.pins:
            self.handle.unpin(key)
            self.pins[key] -= 1
            if not self.pins[key]:
                del self.pins[key]
                if self.finished(key):
                    self.seen_finished.add(key)

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def index_matches_the_model(self) -> None:
        assert set(self.store) == set(self.status)
        assert self.handle.recency() == self.recency
        with self.handle.lock:
            self.handle.index.drain_reads()
            assert list(self.handle.index.delivered) == self.delivered


TestDeliveredOrder = DeliveredOrderMachine.TestCase
TestDeliveredOrder.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


def stored(manager: MemoryManager, order: str, **bounds: Any) -> Any:
    @managed_store(manager=manager, order=order, **bounds)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    return Jobs()


def test_a_result_nobody_fetched_is_the_last_a_bound_takes() -> None:
    manager = MemoryManager(clock=FakeClock(0.0))
    jobs = stored(manager, "delivered", max_jobs=3)
    for key in ("a", "b", "c"):
        jobs[key] = {"status": "done", "result": key}
    jobs.get("b")  # delivered; "a" and "c" are not, and "a" is the least recently used
    with capture_evictions(manager) as events:
        jobs["d"] = {"status": "done", "result": "d"}
        jobs["e"] = {"status": "done", "result": "e"}
    assert [event.key for event in events] == ["b", "a"]


def test_a_poll_that_found_the_job_running_is_no_delivery() -> None:
    manager = MemoryManager(clock=FakeClock(0.0))
    jobs = stored(manager, "delivered", max_jobs=2)
    jobs["a"] = {"status": "running", "result": None}
    jobs["b"] = {"status": "done", "result": "b"}
    assert jobs["a"]["status"] == "running"  # polled while running...
    jobs["a"]["status"] = "done"  # ...then it finished in place
    handle(jobs).cleanup()  # seen finished here, the pending poll with it
    jobs.get("b")
    with capture_evictions(manager) as events:
        jobs["c"] = {"status": "done", "result": "c"}
    assert [event.key for event in events] == ["b"]


def test_the_emergency_order_takes_delivered_results_first() -> None:
    policy = Policy.from_toml('[memory]\nemergency_order = "delivered"\n')
    manager = MemoryManager(policy, clock=FakeClock(0.0))
    jobs = stored(manager, "lru")
    for key in ("a", "b", "c"):
        jobs[key] = {"status": "done", "result": "x" * 10_000}
    jobs["c"]  # a touching read
    jobs["b"]
    events = manager.evict_bytes(15_000)
    assert [event.key for event in events] == ["c", "b"]


def test_a_store_that_does_not_evict_in_delivered_order_keeps_no_delivered_set() -> None:
    manager = MemoryManager(clock=FakeClock(0.0))
    jobs = stored(manager, "lru", max_jobs=10)
    for key in ("a", "b"):
        jobs[key] = {"status": "done", "result": key}
    jobs["a"]
    jobs["c"] = {"status": "done", "result": "c"}  # drains the read
    assert handle(jobs).index.delivered == {}


def test_an_added_rule_in_delivered_order_has_deliveries_to_take() -> None:
    manager = MemoryManager(clock=FakeClock(0.0))
    jobs = stored(manager, "lru")
    handle(jobs).add_rule(Emergency("delivered"))
    for key in ("a", "b", "c"):
        jobs[key] = {"status": "done", "result": "x" * 10_000}
    jobs["b"]  # the one delivery: the emergency takes it first, then the LRU rest
    events = manager.evict_bytes(15_000)
    assert [event.key for event in events] == ["b", "a"]


def test_a_user_rule_asking_for_the_delivered_order_gets_deliveries_from_then_on() -> None:
    manager = MemoryManager(clock=FakeClock(0.0))
    jobs = stored(manager, "lru")
    asked: list[Any] = []

    def delivered_first(index: Any, ctx: Any) -> Any:
        asked.append(list(index.candidates("delivered")))
        return iter(())

    handle(jobs).add_rule(delivered_first)
    for key in ("a", "b"):
        jobs[key] = {"status": "done", "result": key}
    handle(jobs).cleanup()  # the first question: nothing delivered was recorded yet
    jobs["b"]
    handle(jobs).cleanup()
    assert asked[-1][0] == "b"
