"""A managed store and a plain model driven side by side by hypothesis.

The model is the obvious O(n) implementation: a dict of key -> (created, last touch, pinned)
with an explicit recency list. After every step the side index must match it exactly, and
every eviction the store makes must be one the model allows.
"""

from __future__ import annotations

from typing import Any, Optional

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from memguard import MemoryManager, handle, managed_store
from memguard.testing import FakeClock, capture_evictions

KEYS = st.sampled_from([f"job{i}" for i in range(12)])
STATUS = st.sampled_from(["done", "done", "failed", "running", "pending"])
MAX_JOBS = 6
MAX_AGE = 100.0
MAX_IDLE = 40.0


class ManagedStoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(0.0)
        self.manager = MemoryManager(clock=self.clock)

        @managed_store(manager=self.manager, max_jobs=MAX_JOBS, max_age=MAX_AGE,
                       max_idle=MAX_IDLE)
        class Jobs(dict):  # type: ignore[type-arg]
            pass

        self.store = Jobs()
        self.handle = handle(self.store)
        self.model: dict[str, dict[str, Any]] = {}  # key -> job
        self.created: dict[str, float] = {}
        self.recency: list[str] = []
        self.touched: dict[str, float] = {}
        self.pins: dict[str, int] = {}
        self.events_cm = capture_evictions(self.manager)
        self.events = self.events_cm.__enter__()
        self.checked = 0

    def teardown(self) -> None:
        self.events_cm.__exit__(None, None, None)

    # -- helpers ---------------------------------------------------------------------

    def active(self, key: str) -> bool:
        return key in self.pins or self.model[key]["status"] in ("running", "pending")

    def touch(self, key: str) -> None:
        if key in self.recency:
            self.recency.remove(key)
            self.recency.append(key)
            self.touched[key] = self.clock()

    def forget(self, key: str) -> None:
        self.model.pop(key, None)
        self.created.pop(key, None)
        self.touched.pop(key, None)
        self.pins.pop(key, None)
        if key in self.recency:
            self.recency.remove(key)

    def absorb_evictions(self) -> None:
        """Apply the store's evictions to the model, checking each was allowed."""
        for event in self.events[self.checked:]:
            key = event.key
            assert key in self.model, f"evicted {key} twice or unknown"
            assert not self.active(key), f"evicted active job {key}"
            assert event.cause.value in ("count", "age", "idle"), event
            if event.cause.value == "age":
                assert self.clock() - self.created[key] >= MAX_AGE
            if event.cause.value == "idle":
                assert self.clock() - self.touched[key] >= MAX_IDLE
            if event.cause.value == "count":  # always the least recently used evictable job
                assert key == next(k for k in self.recency if not self.active(k))
            self.forget(key)
        self.checked = len(self.events)

    # -- rules -----------------------------------------------------------------------

    @rule(key=KEYS, status=STATUS)
    def insert(self, key: str, status: str) -> None:
        job = {"status": status, "result": "x" * 100}
        new = key not in self.model
        self.store[key] = job
        self.model[key] = job
        if new:
            self.created[key] = self.clock()
            self.touched[key] = self.clock()
            self.recency.append(key)
        else:
            self.touch(key)
        self.absorb_evictions()
        self.check_count_bound(just_written=key)

    @rule(key=KEYS)
    def read(self, key: str) -> None:
        if key in self.model:
            assert self.store[key] is self.model[key]
            self.touch(key)
        else:
            assert self.store.get(key) is None

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        if key in self.model:
            del self.store[key]
            self.forget(key)

    @rule(key=KEYS)
    def pop(self, key: str) -> None:
        assert self.store.pop(key, None) is self.model.get(key)
        self.forget(key)

    @rule(key=KEYS, status=STATUS)
    def setdefault(self, key: str, status: str) -> None:
        if key in self.model:
            assert self.store.setdefault(key, {}) is self.model[key]
            self.touch(key)
        else:
            self.insert(key, status)

    @rule(keys=st.lists(KEYS, max_size=3), status=STATUS)
    def update(self, keys: list[str], status: str) -> None:
        for key in keys:
            self.insert(key, status)

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def clear(self) -> None:
        self.store.clear()
        for key in list(self.model):
            self.forget(key)
        self.pins.clear()

    @rule(key=KEYS)
    def finish(self, key: str) -> None:
        if key in self.model:
            self.model[key]["status"] = "done"  # in place, as apps do

    @rule(key=KEYS)
    def pin(self, key: str) -> None:
        if key in self.model:
            self.handle.pin(key)
            self.pins[key] = self.pins.get(key, 0) + 1

    @rule(key=KEYS)
    def unpin(self, key: str) -> None:
        if key in self.pins:
            self.handle.unpin(key)
            self.pins[key] -= 1
            if not self.pins[key]:
                del self.pins[key]

    @rule(seconds=st.sampled_from([1.0, 5.0, 20.0, 45.0, 110.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def cleanup(self) -> None:
        now = self.clock()
        too_old = {k for k in self.model if now - self.created[k] >= MAX_AGE and not self.active(k)}
        self.handle.cleanup()
        self.absorb_evictions()
        assert not too_old & set(self.model), "an expired, inactive job survived a pass"
        self.check_count_bound()

    def check_count_bound(self, just_written: Optional[str] = None) -> None:
        """After an insert or a pass (the moments it is enforced) the bound holds, unless
        nothing is evictable; the job an insert just wrote is never its victim."""
        evictable = [k for k in self.model if not self.active(k) and k != just_written]
        assert len(self.model) <= MAX_JOBS or not evictable

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def index_is_exact(self) -> None:
        index = self.handle.index
        assert dict(self.store) == self.model
        assert set(index.created) == set(self.model)
        assert self.handle.recency() == self.recency
        assert {k: v for k, v in index.pins.items()} == self.pins
        assert index.total_bytes == sum(s or 0 for s in (index.size_of(k) for k in self.model))

    @invariant()
    def ages_are_creation_times(self) -> None:
        assert dict(self.handle.index.created) == self.created



TestManagedStore = ManagedStoreMachine.TestCase
TestManagedStore.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
