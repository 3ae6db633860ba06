"""@managed_store on each kind of class: the index follows every mutation path exactly."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest

from memguard import MemoryManager, StoreDefinitionError, handle, managed_store
from memguard.testing import FakeClock, capture_evictions


def done(result: str = "r") -> dict[str, Any]:
    return {"status": "done", "result": result}


def index_matches(store: Any) -> None:
    """The side index holds exactly the store's keys, once each."""
    h = handle(store)
    keys = set(h._backend.list_keys())
    assert set(h.index.created) == keys
    assert set(h.recency()) == keys
    assert len(h.recency()) == len(keys)


@pytest.fixture
def dict_store(manager: MemoryManager) -> Any:
    @managed_store(manager=manager)
    class DiagramJobs(dict):  # type: ignore[type-arg]
        pass

    return DiagramJobs()


def test_decorated_class_keeps_its_identity(manager: MemoryManager) -> None:
    @managed_store(manager=manager)
    class DiagramJobs(dict):  # type: ignore[type-arg]
        """Jobs of the diagram controller."""

    store = DiagramJobs()
    assert type(store).__name__ == "DiagramJobs"
    assert "DiagramJobs" in type(store).__qualname__
    assert type(store).__doc__ == "Jobs of the diagram controller."
    assert isinstance(store, dict)
    assert handle(store).name == "diagram_jobs"
    assert manager.stores["diagram_jobs"] == (handle(store),)


def test_bare_decorator_uses_the_default_manager() -> None:
    import memguard

    @managed_store
    class BareJobs(dict):  # type: ignore[type-arg]
        pass

    store = BareJobs()
    try:
        assert handle(store) in memguard.manager.stores["bare_jobs"]
    finally:
        del store
        gc.collect()
    assert "bare_jobs" not in memguard.manager.stores


def test_every_dict_mutation_keeps_the_index_exact(dict_store: Any) -> None:
    dict_store["a"] = done()
    dict_store.update({"b": done(), "c": done()}, d=done())
    dict_store.update([("e", done())])
    dict_store |= {"f": done()}
    dict_store.setdefault("g", done())
    dict_store.setdefault("a", done("ignored"))
    index_matches(dict_store)
    assert dict_store["a"]["result"] == "r"
    del dict_store["b"]
    assert dict_store.pop("c")["status"] == "done"
    assert dict_store.pop("missing", None) is None
    dict_store.popitem()
    index_matches(dict_store)
    dict_store.clear()
    index_matches(dict_store)
    assert len(handle(dict_store).index) == 0


def test_initial_items_are_indexed(manager: MemoryManager) -> None:
    @managed_store(manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs({"a": done()}, b=done())
    index_matches(store)


def test_reads_touch_and_iteration_does_not(dict_store: Any) -> None:
    for key in "abcd":
        dict_store[key] = done()
    h = handle(dict_store)
    assert h.recency() == list("abcd")
    dict_store["a"]
    assert h.recency() == list("bcda")
    dict_store.get("b")
    assert h.recency() == list("cdab")
    assert dict_store.get("zz", 5) == 5
    list(dict_store), list(dict_store.items()), list(dict_store.values()), len(dict_store)
    assert "c" in dict_store
    assert h.recency() == list("cdab")


def test_replacing_a_job_keeps_its_age_and_touches_it(
        dict_store: Any, clock: FakeClock) -> None:
    dict_store["a"] = done()
    created = handle(dict_store).index.created["a"]
    clock.advance(10)
    dict_store["b"] = done()
    dict_store["a"] = done("new")
    assert handle(dict_store).index.created["a"] == created
    assert handle(dict_store).recency() == ["b", "a"]


def test_mutable_mapping_subclass(manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=3)
    class Jobs(MutableMapping[str, Any]):
        def __init__(self) -> None:
            self.data: dict[str, Any] = {}

        def __getitem__(self, key: str) -> Any:
            return self.data[key]

        def __setitem__(self, key: str, value: Any) -> None:
            self.data[key] = value

        def __delitem__(self, key: str) -> None:
            del self.data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self.data)

        def __len__(self) -> int:
            return len(self.data)

    store = Jobs()
    for key in "abc":
        store[key] = done()
    h = handle(store)
    assert "a" in store and "zz" not in store
    list(store.values()), list(store.items())
    assert h.recency() == list("abc")  # none of that touched
    assert store.get("a") is not None
    assert h.recency() == list("bca")
    store["d"] = done()  # over max_jobs: least recently used goes
    assert sorted(store) == ["a", "c", "d"]
    store.pop("c")
    store.update(e=done())
    store.setdefault("f", done())
    index_matches(store)
    store.clear()
    index_matches(store)


def test_mapping_attribute_store(manager: MemoryManager) -> None:
    @managed_store(name="iac", mapping="jobs", manager=manager, max_jobs=2)
    class IacJobStore:
        def __init__(self) -> None:
            self.jobs: dict[str, Any] = {"seed": done()}

    store = IacJobStore()
    assert handle(store) is handle(store.jobs)
    index_matches(store.jobs)
    store.jobs["a"] = done()
    store.jobs["b"] = done()
    assert sorted(store.jobs) == ["a", "b"]
    store.jobs = {"x": done()}  # reassigning adopts the new dict
    assert isinstance(store.jobs, dict)
    index_matches(store.jobs)
    assert handle(store).recency() == ["x"]
    assert manager.stores["iac"] == (handle(store),)


def test_instances_unregister_when_collected(manager: MemoryManager) -> None:
    @managed_store(manager=manager, name="temp")
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    first, second = Jobs(), Jobs()
    assert len(manager.stores["temp"]) == 2
    del first
    gc.collect()
    assert manager.stores["temp"] == (handle(second),)
    del second
    gc.collect()
    assert "temp" not in manager.stores


def test_count_bound_is_enforced_on_insert_in_lru_order(manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=3)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    with capture_evictions(manager) as events:
        for key in "abc":
            store[key] = done()
        store["a"]  # a is now most recent
        store["d"] = done()
    assert sorted(store) == ["a", "c", "d"]
    assert [(e.key, e.cause.value) for e in events] == [("b", "count")]


def test_writes_while_reads_are_pending_keep_the_exact_order(manager: MemoryManager) -> None:
    """A write no longer drains the reads before it: it joins them, after them, so the order
    of reads and writes is still exact when the cheap insert path picks its victims."""
    @managed_store(manager=manager, max_jobs=4)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    for key in "abcd":
        store[key] = done()
    store["a"]  # pending read: a after d
    store["b"] = done()  # rewrite while the read is pending: b after a
    store["c"]  # c last of all
    assert handle(store).index.reads  # nothing drained by the write
    with capture_evictions(manager) as events:
        for key in "efgh":
            store[key] = done()
    assert [e.key for e in events] == ["d", "a", "b", "c"]
    assert handle(store).stats().evictions == {"count": 4}


def test_insert_evictions_count_freed_bytes_before_the_job_is_weighed(
        manager: MemoryManager) -> None:
    """The default estimate is weighed at the next catch-up, not at insert; a victim evicted
    before that counts the store's mean size in `evicted_bytes`, and `stats()` weighs what
    is left to weigh."""
    @managed_store(manager=manager, max_jobs=2)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    before = manager.evicted_bytes
    for n in range(10):
        store[n] = done("x" * 10_000)
    freed = manager.evicted_bytes - before
    assert 8 * 10_000 <= freed <= 8 * 12_000  # 8 victims of about 10 kB each
    assert 2 * 10_000 <= handle(store).stats().bytes <= 2 * 12_000


def test_active_and_pinned_jobs_survive_the_count_bound(manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=2)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    store["run"] = {"status": "running", "result": None}
    store["pin"] = done()
    handle(store).pin("pin")
    store["new"] = {"status": "queued"}
    store["newer"] = done()
    assert sorted(store) == ["new", "newer", "pin", "run"]  # nothing evictable but newer
    handle(store).unpin("pin")
    store["last"] = done()
    assert sorted(store) == ["last", "new", "run"]  # pin and newer went, in LRU order


def test_eviction_releases_fields_of_jobs_still_held(manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=1, release=("result", "chart"))
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    class Job:
        def __init__(self) -> None:
            self.status = "done"
            self.result = "x" * 1000
            self.chart = b"png"

    store = Jobs()
    held_dict = {"status": "done", "result": "big", "chart": "c", "id": 1}
    held_object = Job()
    store["a"] = held_dict
    store["b"] = held_object
    store["c"] = done()
    assert held_dict == {"status": "done", "result": None, "chart": None, "id": 1}
    assert held_object.result is None and held_object.chart is None


def test_callbacks_run_outside_the_lock_and_failures_are_logged(
        manager: MemoryManager, caplog: pytest.LogCaptureFixture) -> None:
    @managed_store(manager=manager, max_jobs=1)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    seen: list[bool] = []

    def check_lock(event: Any) -> None:
        # Another thread can take the store lock only if this callback does not hold it.
        lock = handle(store).lock
        result: list[bool] = []
        other = threading.Thread(target=lambda: result.append(_try_lock(lock)))
        other.start()
        other.join(5)
        seen.extend(result)

    def boom(event: Any) -> None:
        raise RuntimeError("callback failed")

    manager.on_evict(boom)
    manager.on_evict(check_lock)
    store["a"] = done()
    store["b"] = done()
    assert seen == [True]
    assert "callback failed" in caplog.text


def _try_lock(lock: Any) -> bool:
    acquired = bool(lock.acquire(timeout=2))
    if acquired:
        lock.release()
    return acquired


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"max_jobs": -1}, "max_jobs"),
        ({"max_jobs": 0}, "max_jobs"),
        ({"max_age": -5}, "max_age"),
        ({"order": "random"}, "order"),
        ({"max_age": 60, "max_idle": 120}, "max_idle"),
    ],
)
def test_bad_options_fail_at_decoration_time(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(StoreDefinitionError) as caught:
        @managed_store(**options)
        class BadJobs(dict):  # type: ignore[type-arg]
            pass
    assert "BadJobs" in str(caught.value)
    assert problem in str(caught.value)


def test_a_class_that_is_no_mapping_needs_mapping_attr() -> None:
    with pytest.raises(StoreDefinitionError, match=r"NotAStore.*mapping="):
        @managed_store
        class NotAStore:
            pass


def test_mapping_attribute_needs_a_dict_instance() -> None:
    with pytest.raises(StoreDefinitionError, match=r"Slotted.*__dict__"):
        @managed_store(mapping="jobs")
        class Slotted:
            __slots__ = ("jobs",)


def test_plain_dict_through_setup_job_store_cleanup(
        manager: MemoryManager, clock: FakeClock) -> None:
    jobs: dict[str, Any] = {"old": done()}
    h = manager.setup_job_store_cleanup(jobs, "diagram", max_age=60, max_jobs=10)
    assert handle(jobs) is h
    clock.advance(30)
    jobs["new"] = done()  # a plain dict cannot report this write: the pass reconciles it
    clock.advance(40)
    report = manager.run_cleanup()
    assert report.by_store == {"diagram": {"age": 1}}
    assert list(jobs) == ["new"]
    manager.touch_job(jobs, "new")
    assert h.stats().jobs == 1


def test_stats_count_jobs_active_pinned_bytes(dict_store: Any) -> None:
    dict_store["a"] = done("x" * 10_000)
    dict_store["b"] = {"status": "running"}
    handle(dict_store).pin("a")
    stats = handle(dict_store).stats()
    assert (stats.jobs, stats.active, stats.pinned) == (2, 2, 1)
    assert stats.bytes >= 10_000
    assert stats.to_dict()["name"] == "diagram_jobs"


def test_in_use_pins_for_the_block(dict_store: Any) -> None:
    dict_store["a"] = done()
    h = handle(dict_store)
    with h.in_use("a"):
        assert h.stats().pinned == 1
        assert h.evict("a") is not None  # explicit eviction is the user's call
    assert h.stats().pinned == 0


def test_decorator_values_out_of_range_are_store_definition_errors() -> None:
    for options in ({"max_age": 10**400}, {"max_bytes": 10**400}, {"max_jobs": 10**5000}):
        with pytest.raises(StoreDefinitionError, match="too large"):
            managed_store(**options)(type("Jobs", (dict,), {}))


def test_a_pass_with_nothing_due_returns_at_once_and_one_due_runs(
        manager: MemoryManager) -> None:
    """A periodic pass that can evict nothing is skipped in O(1) (no predicate asked);
    once the oldest job reaches `max_age`, or the store goes over its count, it runs."""
    clock = FakeClock(1000.0)
    manager.clock = clock
    asked: list[Any] = []

    def active(job: Any) -> bool:
        asked.append(job)
        return False

    @managed_store(manager=manager, max_age=60, max_jobs=5, active=active)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    for key in "abc":
        store[key] = done()
    assert manager.run_cleanup().evicted == 0  # the first pass runs and notes the due time
    clock.advance(30)
    store["d"] = done()
    asked.clear()
    assert manager.run_cleanup().evicted == 0
    assert asked == []  # skipped: nothing looked at
    clock.advance(31)  # a, b, c are 61 s old
    report = manager.run_cleanup()
    assert report.by_cause == {"age": 3}
    assert sorted(store) == ["d"]
