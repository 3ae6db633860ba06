"""Dict-based stores whose classes do unusual things (issue 12, items 6 and 7): the index follows
what the class really stored, and OrderedDict and UserDict bases work, copies included.
"""

from __future__ import annotations

import collections
import copy
from typing import Any

import pytest

from memguard import MemoryManager, Policy, handle, managed_store
from memguard.testing import FakeClock


@pytest.fixture
def manager() -> MemoryManager:
    return MemoryManager(Policy(), clock=FakeClock(0.0))


def test_a_class_that_normalises_keys_is_indexed_and_bounded(
        manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=5)
    class Lower(dict):  # type: ignore[type-arg]
        def __setitem__(self, key: str, value: Any) -> None:
            super().__setitem__(key.lower(), value)

    store = Lower()
    for i in range(50):
        store[f"JOB{i}"] = {"status": "done"}
    assert len(store) == 5
    assert sorted(handle(store).index.keys()) == sorted(store)


def test_a_refused_write_leaves_no_ghost(manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=2)
    class Picky(dict):  # type: ignore[type-arg]
        def __setitem__(self, key: str, value: Any) -> None:
            if not key.startswith("spam"):
                super().__setitem__(key, value)

    store = Picky()
    store["a"] = {"status": "done"}
    store["spam"] = {"status": "done"}
    store["b"] = {"status": "done"}
    assert sorted(store) == ["a", "b"]  # the ghost did not push "a" out
    assert sorted(handle(store).index.keys()) == ["a", "b"]


def test_an_undecorated_subclass_writing_through_dict_is_followed(
        manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=3)
    class Base(dict):  # type: ignore[type-arg]
        pass

    class Sub(Base):
        def update(self, *args: Any, **kwargs: Any) -> None:
            dict.update(self, *args, **kwargs)

        def __setitem__(self, key: Any, value: Any) -> None:
            dict.__setitem__(self, key, value)

    store = Sub()
    store.update({f"u{i}": {"status": "done"} for i in range(10)})
    for i in range(10):
        store[f"s{i}"] = {"status": "done"}
    assert len(store) == 3
    assert sorted(handle(store).index.keys()) == sorted(store)


def test_an_ordered_dict_store(manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=2)
    class Ordered(collections.OrderedDict):  # type: ignore[type-arg]
        pass

    store = Ordered()
    for key in "abc":
        store[key] = {"status": "done"}
    assert list(store) == ["b", "c"]
    store.move_to_end("b")
    assert store.popitem(last=False)[0] == "c"
    assert handle(store).index.keys() == ["b"]


def test_copies_of_a_user_dict_store_are_stores_of_their_own(
        manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=5)
    class Jobs(collections.UserDict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    store["a"] = {"status": "done"}
    for made in (store.copy(), copy.copy(store)):
        assert dict(made) == {"a": {"status": "done"}}
        assert handle(made) is not handle(store)
        made["b"] = {"status": "done"}
        assert sorted(handle(made).index.keys()) == ["a", "b"]
        assert list(store) == ["a"] and handle(store).index.keys() == ["a"]
