"""A RedisStore and a plain model driven side by side by hypothesis.

The Redis version of tests/stores/test_store_state_machine.py, where the semantics are the same:
writes, reads, live field writes, pins, explicit evictions, passes and the count bound at
insert. Time rules are left out (Redis' clock is real: tests/redis/test_redis_store.py
covers age and idle). After every step the store must equal the model, its recency order
must be the model's, its byte count the sum of the stored sizes, and every eviction one the
model allows (the least recently used job that is neither active nor pinned).
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Optional

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from memguard import MemoryManager, Policy, handle, managed_store
from memguard.redis import RedisStore
from memguard.testing import capture_evictions

KEYS = st.sampled_from([f"job{i}" for i in range(10)])
STATUS = st.sampled_from(["done", "done", "failed", "running", "pending"])
NOTE = st.sampled_from(["", "n", "é" * 3])
RESULT = st.sampled_from([None, "", "x" * 100, {"text": "é" * 7}, [1, 2.5, True]])
MAX_JOBS = 5
_names = itertools.count()


def stored_size(job: dict[str, Any]) -> int:
    """What the store counts for a job: each field name and serialized value, the release
    field's name twice (its marker in the small fields is 2 bytes)."""
    size = 0
    for field, value in job.items():
        data = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        size += len(field) + data + (len(field) + 2 if field == "result" else 0)
    return size


class RedisStoreMachine(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.manager = MemoryManager(Policy())

        @managed_store(name=f"machine{next(_names)}", manager=self.manager, max_jobs=MAX_JOBS)
        class Jobs(RedisStore):
            pass

        self.store = Jobs(self.url)
        self.handle = handle(self.store)
        self.model: dict[str, dict[str, Any]] = {}
        self.recency: list[str] = []
        self.pins: dict[str, int] = {}
        #: key -> the generation of the job stored there (a new one at every store[key] =)
        self.generation: dict[str, int] = {}
        self.generations = itertools.count()
        #: key -> (a live job some worker read, the generation it read)
        self.held: dict[str, tuple[Any, int]] = {}
        self.events_cm = capture_evictions(self.manager)
        self.events = self.events_cm.__enter__()
        self.checked = 0

    def teardown(self) -> None:
        self.events_cm.__exit__(None, None, None)
        self.store.clear()

    # -- helpers ---------------------------------------------------------------------

    def active(self, key: str) -> bool:
        return key in self.pins or self.model[key].get("status") in ("running", "pending")

    def running(self, key: str) -> bool:
        return key in self.model and self.model[key].get("status") in ("running", "pending")

    def after_write(self, key: str, was_running: bool) -> None:
        """A write that finishes a job enforces the count bound, as an insert does."""
        if was_running and not self.running(key):
            self.absorb_evictions(just_written=key)
            self.check_count_bound(just_written=key)

    def touch(self, key: str) -> None:
        self.recency.remove(key)
        self.recency.append(key)

    def forget(self, key: str) -> None:
        self.model.pop(key, None)
        if key in self.recency:
            self.recency.remove(key)

    def absorb_evictions(self, causes: tuple[str, ...] = ("count",),
                         just_written: Optional[str] = None) -> None:
        for event in self.events[self.checked:]:
            key = event.key
            assert key in self.model, f"evicted {key} twice or unknown"
            assert event.cause.value in causes, event
            if event.cause.value == "count":
                assert not self.active(key), f"evicted active job {key}"
                assert key == next(k for k in self.recency
                                   if not self.active(k) and k != just_written)
                assert event.size == stored_size(self.model[key])
            self.forget(key)
        self.checked = len(self.events)

    def check_count_bound(self, just_written: Optional[str] = None) -> None:
        evictable = [k for k in self.model if not self.active(k) and k != just_written]
        assert len(self.model) <= MAX_JOBS or not evictable

    # -- rules -----------------------------------------------------------------------

    @rule(key=KEYS, status=STATUS, result=RESULT)
    def insert(self, key: str, status: str, result: Any) -> None:
        job = {"status": status, "result": result}
        self.store[key] = job
        if key in self.model:
            self.touch(key)
        else:
            self.recency.append(key)
        self.model[key] = dict(job)
        self.generation[key] = next(self.generations)
        self.absorb_evictions(just_written=key)
        self.check_count_bound(just_written=key)

    @rule(key=KEYS)
    def read(self, key: str) -> None:
        if key in self.model:
            assert self.store[key] == self.model[key]
            self.touch(key)
        else:
            assert self.store.get(key) is None

    @rule(key=KEYS)
    def peek(self, key: str) -> None:
        assert self.store.peek(key) == self.model.get(key)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        if key in self.model:
            del self.store[key]
            self.forget(key)
        else:
            assert key not in self.store

    @rule(key=KEYS)
    def pop(self, key: str) -> None:
        assert self.store.pop(key, None) == self.model.get(key)
        self.forget(key)

    @rule(key=KEYS, status=STATUS)
    def setdefault(self, key: str, status: str) -> None:
        if key in self.model:
            assert self.store.setdefault(key, {}) == self.model[key]
            self.touch(key)
        else:
            self.insert(key, status, None)

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def clear(self) -> None:
        self.store.clear()
        for key in list(self.model):
            self.forget(key)

    @rule(key=KEYS, status=STATUS, result=RESULT)
    def write_fields(self, key: str, status: str, result: Any) -> None:
        """A worker finishing a job through the live job it read (each write a touch)."""
        job = self.store.peek(key)
        if key not in self.model:
            assert job is None
            return
        was_running = self.running(key)
        job["result"] = result
        job["status"] = status
        self.model[key].update(status=status, result=result)
        self.touch(key)
        self.after_write(key, was_running)

    @rule(key=KEYS, status=STATUS, result=RESULT, note=NOTE)
    def update_fields(self, key: str, status: str, result: Any, note: str) -> None:
        """`job.update(...)`: several fields in one atomic write."""
        job = self.store.peek(key)
        if key not in self.model:
            assert job is None
            return
        was_running = self.running(key)
        job.update(status=status, result=result, note=note)
        self.model[key].update(status=status, result=result, note=note)
        self.touch(key)
        self.after_write(key, was_running)

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def hold(self, data: st.DataObject) -> None:
        """A worker keeps the live job it read (its id may be deleted and reused later)."""
        key = data.draw(st.sampled_from(sorted(self.model)))
        self.held[key] = (self.store.peek(key), self.generation[key])

    @precondition(lambda self: len(self.held) > 0)
    @rule(data=st.data(), status=STATUS)
    def reuse_held_id(self, data: st.DataObject, status: str) -> None:
        """Another worker deletes a held job's id (if still there) and stores a new job
        under it."""
        key = data.draw(st.sampled_from(sorted(self.held)))
        if key in self.model:
            self.delete(key)
        self.insert(key, status, None)

    @precondition(lambda self: len(self.held) > 0)
    @rule(data=st.data(), status=STATUS, note=NOTE)
    def write_held(self, data: st.DataObject, status: str, note: str) -> None:
        """The held job written: it reaches the job it was read from, never a job stored
        under its id since (deleted and reused, or replaced)."""
        key = data.draw(st.sampled_from(sorted(self.held)))
        job, generation = self.held[key]
        was_running = self.running(key)
        job.update(status=status, note=note)
        if key in self.model and self.generation[key] == generation:
            self.model[key].update(status=status, note=note)
            self.touch(key)
            self.after_write(key, was_running)

    @rule(key=KEYS)
    def delete_field(self, key: str) -> None:
        job = self.store.peek(key)
        if key in self.model and "status" in self.model[key]:
            running = self.model[key]["status"] in ("running", "pending")
            del job["status"]
            del self.model[key]["status"]
            if running:  # a job that finishes comes back at the recent end, as in-process
                self.touch(key)
            self.after_write(key, running)

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

    @rule(key=KEYS)
    def evict(self, key: str) -> None:
        event = self.handle.evict(key)
        assert (event is None) == (key not in self.model)
        self.absorb_evictions(causes=("explicit",))
        self.forget(key)

    @rule()
    def cleanup(self) -> None:
        self.handle.cleanup()
        self.absorb_evictions()
        self.check_count_bound()

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def store_is_the_model(self) -> None:
        assert {key: job.copy() for key, job in self.store.items()} == self.model
        # Running jobs are out of the recency order (no insert walks past them) and come
        # last, by their last write; the others are in exact recency order.
        running = [k for k in self.recency
                   if self.model[k].get("status") in ("running", "pending")]
        found = self.handle.recency()
        done = len(self.recency) - len(running)
        assert found[:done] == [k for k in self.recency if k not in running]
        assert sorted(found[done:]) == sorted(running)
        assert self.handle.index.pins == self.pins

    @invariant()
    def figures_are_exact(self) -> None:
        stats = self.handle.stats()
        assert stats.jobs == len(self.model)
        assert stats.bytes == sum(stored_size(job) for job in self.model.values())
        assert stats.active == sum(job.get("status") in ("running", "pending")
                                   for job in self.model.values())
        assert stats.pinned == len(self.pins)  # held pins, whether their job is stored or not


def test_redis_store_matches_the_model(redis_url: str) -> None:
    RedisStoreMachine.url = redis_url
    run_state_machine_as_test(RedisStoreMachine, settings=settings(
        max_examples=60, stateful_step_count=40, deadline=None))
