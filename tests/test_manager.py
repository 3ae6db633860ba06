"""`MemoryManager` on its own: policy application, listeners, cleanups across stores."""

from __future__ import annotations

from typing import Any

import pytest

from memguard import MemoryManager, MemoryStats, Policy, managed_store
from memguard.policy.files import load_policy
from memguard.testing import FakeClock, FakeProbe


@pytest.fixture
def manager() -> MemoryManager:
    return MemoryManager(Policy(), clock=FakeClock(0.0), probe=FakeProbe("100MB", "512MB"))


def store_named(manager: MemoryManager, name: str, **options: Any) -> Any:
    @managed_store(name=name, manager=manager, **options)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    return Jobs()


def test_a_policy_applies_to_every_live_store_at_once(manager: MemoryManager) -> None:
    a, b = store_named(manager, "a", max_jobs=10), store_named(manager, "b")
    manager.load_policy(load_policy('[defaults]\nmax_age = "1h"\n[stores.a]\nmax_jobs = 3\n',
                                    environ={}))
    assert manager.stores["a"][0].policy.max_jobs == 3  # [stores.a] over the decorator
    assert manager.stores["b"][0].policy.max_age == 3600
    for i in range(5):
        a[i] = {"status": "done"}
    assert len(a) == 3 and len(b) == 0


def test_listeners_are_called_once_per_eviction_and_can_be_removed(
        manager: MemoryManager) -> None:
    store = store_named(manager, "listened", max_jobs=1)
    seen: list[Any] = []
    callback = manager.on_evict(seen.append)
    store["a"] = {"status": "done"}
    store["b"] = {"status": "done"}
    manager.remove_evict_callback(callback)
    store["c"] = {"status": "done"}
    assert [(e.key, e.cause.value) for e in seen] == [("a", "count")]


def test_evict_bytes_spends_the_budget_on_the_largest_store_first(
        manager: MemoryManager) -> None:
    big = store_named(manager, "big", size=lambda job: job["size"])
    small = store_named(manager, "small", size=lambda job: job["size"])
    for i in range(10):
        big[f"b{i}"] = {"status": "done", "size": 1000}
        small[f"s{i}"] = {"status": "done", "size": 10}
    events = manager.evict_bytes(2500)
    assert {e.store for e in events} == {"big"} and len(events) == 3
    assert len(small) == 10


def test_the_monitor_facade_is_typed_and_lazy(manager: MemoryManager) -> None:
    assert manager.monitor is None
    stats = manager.get_memory_stats()
    assert isinstance(stats, MemoryStats) and stats.sample.usage == 100 * 2**20
    assert manager.monitor is not None and not manager.monitor.running
    assert manager.is_memory_high(50) and not manager.is_memory_high()
