"""`MemoryManager` on its own: policy application, listeners, cleanups across stores."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from memguard import MemoryManager, MemoryStats, Policy, handle, managed_store
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


def test_an_explicit_store_order_spends_the_budget_on_the_largest_store_first() -> None:
    manager = MemoryManager(Policy.from_toml('[memory]\nemergency_order = "lru"\n'),
                            clock=FakeClock(0.0), probe=FakeProbe("100MB", "512MB"))
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


# -- adopted plain dicts (issue 12, items 4 and 8) -------------------------------------------


def test_stats_of_an_adopted_plain_dict_do_not_walk_it(manager: MemoryManager) -> None:
    jobs: dict[str, Any] = {"a": {"status": "done"}}
    store_handle = manager.setup_job_store_cleanup(jobs, "plain")
    jobs.update({f"k{i}": {"status": "done"} for i in range(100)})
    assert store_handle.stats().jobs == 101  # the dict's own length, no reconcile


def test_forget_unregisters_an_adopted_dict(manager: MemoryManager) -> None:
    jobs: dict[str, Any] = {}
    manager.setup_job_store_cleanup(jobs, "plain")
    assert [h.name for h in manager.handles()] == ["plain"]
    assert manager.forget(jobs) is True
    assert manager.handles() == [] and manager.stores == {}
    assert manager.forget(jobs) is False
    with pytest.raises(TypeError):
        handle(jobs)


def test_dropped_plain_dicts_do_not_pile_up(manager: MemoryManager) -> None:
    for i in range(2000):
        manager.setup_job_store_cleanup({"k": {"status": "done"}}, f"plain{i % 7}")
    kept: dict[str, Any] = {}
    manager.setup_job_store_cleanup(kept, "kept")
    gc.collect()
    manager.run_cleanup()
    assert [h.name for h in manager.handles()] == ["kept"]
    assert len(manager._stores.plain) == 1
