"""`mapping_stores`: MutableMapping stores (issue 12, items 6 and 10): a refused write leaves no
ghost in the index, views skip jobs evicted meanwhile, and pop lets no eviction in half-way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest

from memguard import MemoryManager, Policy, handle, managed_store
from memguard.testing import FakeClock


@pytest.fixture
def manager() -> MemoryManager:
    return MemoryManager(Policy(), clock=FakeClock(0.0))


def test_a_mapping_class_that_refuses_leaves_no_ghost(manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=2)
    class Picky(MutableMapping):  # type: ignore[type-arg]
        def __init__(self) -> None:
            self.data: dict[Any, Any] = {}

        def __getitem__(self, key: Any) -> Any:
            return self.data[key]

        def __setitem__(self, key: Any, value: Any) -> None:
            if key != "spam":
                self.data[key] = value

        def __delitem__(self, key: Any) -> None:
            del self.data[key]

        def __iter__(self) -> Iterator[Any]:
            return iter(list(self.data))

        def __len__(self) -> int:
            return len(self.data)

    store = Picky()
    store["a"] = {"status": "done"}
    store["spam"] = {"status": "done"}
    store["b"] = {"status": "done"}
    assert sorted(store) == ["a", "b"]
    assert sorted(handle(store).index.keys()) == ["a", "b"]


class SnapshotMapping(MutableMapping):  # type: ignore[type-arg]
    """A MutableMapping whose iteration lists its keys first, as thread-safe ones do."""

    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.data[key] = value

    def __delitem__(self, key: Any) -> None:
        del self.data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self.data))

    def __len__(self) -> int:
        return len(self.data)


def test_views_of_a_mapping_store_skip_jobs_evicted_meanwhile(
        manager: MemoryManager) -> None:
    store = managed_store(manager=manager)(SnapshotMapping)()
    for key in "abcd":
        store[key] = {"status": "done"}
    seen = []
    for key, _job in store.items():
        seen.append(key)
        if key == "a":
            handle(store).evict("c")  # what the monitor does from its thread
    assert seen == ["a", "b", "d"]
    values = iter(store.values())
    next(values)
    handle(store).evict("d")
    assert len(list(values)) == 1


class PausingMapping(SnapshotMapping):
    """Its next read pauses (bounded) after reading, so another thread can act in between."""

    pause: Any = None

    def __getitem__(self, key: Any) -> Any:
        value = self.data[key]
        pause, self.pause = self.pause, None
        if pause is not None:
            entered, resume = pause
            entered.set()
            resume.wait(timeout=2.0)  # with the fix the evictor waits for the lock instead
        return value


@pytest.mark.parametrize("operation", ["pop", "popitem"])
def test_pop_of_a_mapping_store_lets_no_eviction_in_between(
        manager: MemoryManager, operation: str) -> None:
    store = managed_store(manager=manager)(PausingMapping)()
    store["a"] = {"status": "done"}
    entered, resume = threading.Event(), threading.Event()
    store.pause = (entered, resume)
    outcome: list[Any] = []

    def evictor() -> None:  # the monitor's thread, evicting "a" while pop is half-way
        if entered.wait(timeout=30):
            outcome.append(handle(store).evict("a"))
        resume.set()

    thread = threading.Thread(target=evictor)
    thread.start()
    try:
        popped = store.pop("a", None) if operation == "pop" else store.popitem()
    finally:
        resume.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert popped is not None
    assert outcome == [None]  # the eviction came after the pop: nothing left to evict
    assert len(store) == 0 and handle(store).index.keys() == []
