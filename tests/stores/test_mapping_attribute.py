"""A `mapping=` store whose attribute is missing or not a mapping after ``__init__`` (issue
22, DESIGN section 3): a typo used to leave the real dict unbounded while the stats reported
an empty store. Construction now raises `StoreDefinitionError` naming the attribute and the
attributes that do hold a mapping."""

from __future__ import annotations

from typing import Any

import pytest

from memguard import MemoryManager, handle, managed_store
from memguard.errors import StoreDefinitionError


def done(n: int) -> dict[str, Any]:
    return {"status": "done", "result": "x" * n}


def test_a_typo_in_mapping_fails_at_construction(manager: MemoryManager) -> None:
    @managed_store(manager=manager, name="iac", mapping="job", max_jobs=3)
    class IacJobStore:
        def __init__(self) -> None:
            self.jobs: dict[str, Any] = {}
            self.settings = {"retries": 2}
            self.count = 0

    with pytest.raises(StoreDefinitionError) as caught:
        IacJobStore()
    message = str(caught.value)
    assert "IacJobStore" in message and "mapping='job'" in message
    assert "the attributes holding a mapping are: 'jobs', 'settings'" in message
    assert "did you mean mapping='jobs'?" in message
    assert "count" not in message  # an int is not a mapping: not offered
    # Nothing half-built was registered: the stats never show an empty 'iac' store.
    assert [s.name for s in manager.get_memory_stats().stores] == []


def test_the_right_attribute_bounds_the_dict(manager: MemoryManager) -> None:
    """The same class with the attribute spelled right: ten jobs in, three kept, three
    reported (the typo's symptom was ten held and zero reported)."""
    @managed_store(manager=manager, name="iac", mapping="jobs", max_jobs=3)
    class IacJobStore:
        def __init__(self) -> None:
            self.jobs: dict[str, Any] = {}

    store = IacJobStore()
    for i in range(10):
        store.jobs[f"j{i}"] = done(10)
    assert sorted(store.jobs) == ["j7", "j8", "j9"]
    (stats,) = manager.get_memory_stats().stores
    assert (stats.name, stats.jobs) == ("iac", 3)
    assert handle(store).stats().jobs == 3


def test_an_attribute_that_is_not_a_mapping_fails_at_construction(
        manager: MemoryManager) -> None:
    @managed_store(manager=manager, name="iac", mapping="jobs")
    class IacJobStore:
        def __init__(self) -> None:
            self.results: dict[str, Any] = {}
            self.jobs: list[Any] = []

    with pytest.raises(StoreDefinitionError) as caught:
        IacJobStore()
    message = str(caught.value)
    assert "IacJobStore.jobs holds the jobs of store 'iac'" in message
    assert "must be a dict; got list" in message
    assert "the attributes holding a mapping are: 'results'" in message
    assert isinstance(caught.value, TypeError)  # what assigning a list raised before


def test_no_mapping_attribute_at_all_says_what_mapping_means(manager: MemoryManager) -> None:
    @managed_store(manager=manager, name="iac", mapping="jobs")
    class IacJobStore:
        def __init__(self) -> None:
            self.name = "iac"

    with pytest.raises(StoreDefinitionError, match=r"names no attribute the instance has "
                       r"after __init__; the instance has no attribute holding a mapping"):
        IacJobStore()


def test_assigning_a_non_mapping_later_fails_and_keeps_the_jobs(manager: MemoryManager) -> None:
    @managed_store(manager=manager, name="iac", mapping="jobs", max_jobs=3)
    class IacJobStore:
        def __init__(self) -> None:
            self.jobs: Any = {"a": done(1)}

    store = IacJobStore()
    with pytest.raises(StoreDefinitionError, match="must be a dict; got str"):
        store.jobs = "oops"
    assert list(store.jobs) == ["a"]
    store.jobs["b"] = done(1)
    assert handle(store).stats().jobs == 2
