"""`manager.forget()` on every kind of in-process store (issue 24, item 3).

Each kind, forgotten by its store object or by its handle, leaves the manager: no more
passes, emergency evictions or stats for it, and its jobs stay. A decorated store keeps its
own insert-time bounds; an adopted mapping is no longer referenced by the manager (real
garbage collection frees it). Redis stores are covered with the Redis handle.
"""

from __future__ import annotations

import gc
import weakref
from collections import UserDict
from collections.abc import Iterator, MutableMapping
from typing import Any, Callable

import pytest

from memguard import MemoryManager, Policy, handle, managed_store
from memguard.stores.backend import Backend
from memguard.stores.protocol import StoreHandle
from memguard.testing import FakeClock


class PlainMapping(MutableMapping):  # type: ignore[type-arg]
    """A user's own mapping, not a dict."""

    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.data[key] = value

    def __delitem__(self, key: Any) -> None:
        del self.data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def dict_store(manager: MemoryManager) -> tuple[Any, MutableMapping[Any, Any], StoreHandle]:
    @managed_store(manager=manager, max_age=10, max_jobs=3)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    return store, store, handle(store)


def userdict_store(manager: MemoryManager) -> tuple[Any, MutableMapping[Any, Any], StoreHandle]:
    @managed_store(manager=manager, max_age=10, max_jobs=3)
    class Jobs(UserDict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    return store, store, handle(store)


def mapping_class_store(manager: MemoryManager
                        ) -> tuple[Any, MutableMapping[Any, Any], StoreHandle]:
    jobs_class = managed_store(manager=manager, max_age=10, max_jobs=3)(
        type("Jobs", (PlainMapping,), {}))
    store = jobs_class()
    return store, store, handle(store)


def attribute_store(manager: MemoryManager) -> tuple[Any, MutableMapping[Any, Any], StoreHandle]:
    @managed_store(manager=manager, mapping="jobs", max_age=10, max_jobs=3)
    class Service:
        def __init__(self) -> None:
            self.jobs: dict[Any, Any] = {}

    owner = Service()
    return owner, owner.jobs, handle(owner)


def adopted_dict(manager: MemoryManager) -> tuple[Any, MutableMapping[Any, Any], StoreHandle]:
    store: dict[Any, Any] = {}
    return store, store, manager.setup_job_store_cleanup(store, "plain", max_age=10)


def adopted_mapping(manager: MemoryManager) -> tuple[Any, MutableMapping[Any, Any], StoreHandle]:
    store = PlainMapping()
    return store, store, manager.setup_job_store_cleanup(store, "mapping", max_age=10)


KINDS: dict[str, Callable[[MemoryManager], tuple[Any, MutableMapping[Any, Any], StoreHandle]]]
KINDS = {"dict": dict_store, "UserDict": userdict_store, "MutableMapping": mapping_class_store,
         "mapping=": attribute_store, "adopted dict": adopted_dict,
         "adopted mapping": adopted_mapping}
DECORATED = {"dict", "UserDict", "MutableMapping", "mapping="}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def manager(clock: FakeClock) -> MemoryManager:
    return MemoryManager(Policy(), clock=clock)


@pytest.mark.parametrize("by_handle", [False, True], ids=["by store", "by handle"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_forget_takes_every_kind_of_store_out_of_the_manager(
        manager: MemoryManager, clock: FakeClock, kind: str, by_handle: bool) -> None:
    owner, jobs, store_handle = KINDS[kind](manager)
    jobs["old"] = {"status": "done", "result": "x" * 1000}
    assert store_handle in manager.handles()
    clock.advance(60)  # "old" is past max_age: a pass would take it

    assert manager.forget(store_handle if by_handle else owner) is True

    assert store_handle not in manager.handles()
    assert all(store_handle not in group for group in manager.stores.values())
    assert manager.run_cleanup().evicted == 0
    assert manager.evict_bytes(10**9) == []
    assert "old" in jobs  # its jobs stay where they are
    assert manager.forget(owner) is False  # not registered any more
    assert manager.forget(store_handle) is False


@pytest.mark.parametrize("kind", sorted(DECORATED))
def test_a_forgotten_decorated_store_keeps_its_insert_bounds(
        manager: MemoryManager, kind: str) -> None:
    owner, jobs, _ = KINDS[kind](manager)
    assert manager.forget(owner)
    for i in range(5):
        jobs[i] = {"status": "done"}
    assert sorted(jobs) == [2, 3, 4]  # max_jobs=3, least recent first


def test_the_job_mapping_of_a_mapping_store_forgets_its_owner(manager: MemoryManager) -> None:
    _owner, jobs, store_handle = attribute_store(manager)  # (the owner kept alive)
    assert manager.forget(jobs) is True  # the dict at `owner.jobs` names the same store
    assert store_handle not in manager.handles()


def test_a_forgotten_adopted_mapping_is_freed_by_garbage_collection(
        manager: MemoryManager) -> None:
    store, _, _ = adopted_mapping(manager)
    gone = weakref.ref(store)
    assert manager.forget(store)
    del store
    gc.collect()
    assert gone() is None
    assert manager.handles() == []


def test_a_forgotten_adopted_dict_is_no_longer_referenced_by_the_manager(
        manager: MemoryManager) -> None:
    store: dict[str, Any] = {"job": {"status": "done"}}
    manager.setup_job_store_cleanup(store, "plain", max_age=10)
    assert held_by_a_backend(store)  # plain dicts cannot be weakly referenced: held
    assert manager.forget(store)
    gc.collect()
    assert manager.plain_handle(store) is None
    assert not held_by_a_backend(store)  # handle and backend were freed


def held_by_a_backend(store: dict[str, Any]) -> bool:
    """Whether a `Backend` references `store`: directly (Python 3.11+ keeps instance
    attributes inline) or through its instance `__dict__` (Python 3.10 and older)."""
    for referrer in gc.get_referrers(store):
        if type(referrer) is Backend:
            return True
        if type(referrer) is dict and any(type(owner) is Backend and vars(owner) is referrer
                                          for owner in gc.get_referrers(referrer)):
            return True
    return False
