"""Edge cases found in review: each pins down one behaviour that once went wrong."""

from __future__ import annotations

import copy
import pickle
import threading
from typing import Any

import pytest

from memguard import (
    MemoryManager,
    PolicyError,
    StoreDefinitionError,
    handle,
    managed_store,
    touches,
)
from memguard.eviction.events import Cause
from memguard.eviction.rules import Pass
from memguard.index.marks import MAX_EPOCHS
from memguard.testing import FakeClock, capture_evictions


def done(result: Any = "r") -> dict[str, Any]:
    return {"status": "done", "result": result}


def dict_store(manager: MemoryManager, **options: Any) -> Any:
    @managed_store(manager=manager, **options)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    return Jobs()


def test_idle_expiry_works_after_many_more_passes_than_markers(
        manager: MemoryManager, clock: FakeClock) -> None:
    store = dict_store(manager, max_idle="20m")
    store["forgotten"] = done()
    store["polled"] = done()
    for _ in range(6 * 60):  # a pass every 10 s for an hour, far more than MAX_EPOCHS
        clock.advance(10)
        store["polled"]
        handle(store).cleanup()
        assert len(handle(store).index.epochs) <= MAX_EPOCHS
        if "forgotten" not in store:
            break
    assert "forgotten" not in store
    assert clock() - 1000.0 <= 21 * 60 + 60  # gone within the idle time plus a marker gap
    assert "polled" in store


def test_no_read_is_lost_however_many_arrive_between_passes(
        manager: MemoryManager, clock: FakeClock) -> None:
    store = dict_store(manager, max_idle="10m")
    for n in range(100):
        store[n] = done()
    handle(store).cleanup()
    clock.advance(7 * 60)
    store[0]  # read once, long before a flood of other reads
    for _ in range(200):
        for n in range(1, 100):
            store[n]
    clock.advance(4 * 60)
    handle(store).cleanup()
    assert 0 in store


def test_reassigning_the_mapping_keeps_ages_and_pins_and_detaches_the_old_dict(
        manager: MemoryManager, clock: FakeClock) -> None:
    @managed_store(manager=manager, mapping="jobs", max_age=60, name="iac")
    class Store:
        def __init__(self) -> None:
            self.jobs: dict[str, Any] = {}

    store = Store()
    store.jobs["old"] = done()
    store.jobs["pinned"] = done()
    handle(store).pin("pinned")
    stale = store.jobs
    clock.advance(70)
    store.jobs = {key: job for key, job in store.jobs.items()}  # the filter idiom
    handle(store).cleanup()
    assert "old" not in store.jobs  # its age survived the reassignment
    assert "pinned" in store.jobs  # so did its pin
    stale["phantom"] = done()  # writes through the old dict no longer reach the index
    assert "phantom" not in handle(store).index.created
    assert sorted(handle(store).index.created) == ["pinned"]


def test_a_rejected_setup_changes_nothing(manager: MemoryManager) -> None:
    jobs: dict[str, Any] = {}
    h = manager.setup_job_store_cleanup(jobs, "legacy", max_jobs=5)
    with pytest.raises(PolicyError, match="max_jobs"):
        manager.setup_job_store_cleanup(jobs, "legacy", max_jobs=-1)
    assert h.policy.max_jobs == 5
    manager.load_policy("[stores.legacy]\nmax_age = \"5m\"\n")  # reloads still work
    assert h.policy.max_age == 300 and h.policy.max_jobs == 5


def test_setdefault_notifies_outside_the_lock(manager: MemoryManager) -> None:
    store = dict_store(manager, max_jobs=1)
    store["a"] = done()
    free: list[bool] = []

    def other_thread_can_lock(event: Any) -> None:
        lock = handle(store).lock
        result: list[bool] = []

        def try_lock() -> None:
            acquired = lock.acquire(timeout=2)
            if acquired:
                lock.release()
            result.append(acquired)

        thread = threading.Thread(target=try_lock)
        thread.start()
        thread.join(5)
        free.extend(result)

    manager.on_evict(other_thread_can_lock)
    store.setdefault("b", done())
    assert free == [True]


def test_a_plain_dict_key_deleted_during_a_pass_does_not_stop_the_cleanup(
        manager: MemoryManager, clock: FakeClock) -> None:
    jobs: dict[str, Any] = {f"j{n}": done() for n in range(5)}
    h = manager.setup_job_store_cleanup(jobs, "legacy", max_age=60)
    other = dict_store(manager, max_age=60)
    other["x"] = done()
    real_get = h._backend.get

    def vanishing_get(key: Any) -> Any:  # another thread deletes j3 as we look
        jobs.pop("j3", None)
        return real_get(key)

    h.switch_backend(type(h._backend)(jobs, get=lambda store, key: vanishing_get(key),
                                      delete=dict.__delitem__, keys=dict.keys))
    h._backend.needs_sync = True
    jobs["late"] = done()
    clock.advance(61)
    report = manager.run_cleanup()
    assert "x" not in other  # the other store still got its pass
    assert report.by_store["jobs"] == {"age": 1}
    assert set(h.index.created) == set(jobs)


def test_a_store_class_keeps_its_own_get_and_update(manager: MemoryManager) -> None:
    @managed_store(manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        def get(self, key: Any, default: Any = None) -> Any:
            return ("mine", super().get(key, default))

        def update(self, *args: Any, **kwargs: Any) -> None:
            super().update(*args, **kwargs)  # bypasses __setitem__

    store = Jobs()
    store["a"] = done()
    store["b"] = done()
    assert store.get("a")[0] == "mine"
    assert handle(store).recency() == ["b", "a"]
    store.update({"c": done()})
    assert set(handle(store).index.created) == {"a", "b", "c"}


def test_decorating_a_managed_class_again_manages_once(manager: MemoryManager) -> None:
    @managed_store(manager=manager, name="base", max_jobs=10)
    class Base(dict):  # type: ignore[type-arg]
        pass

    @managed_store(manager=manager, name="child", max_jobs=2)
    class Child(Base):
        pass

    child = Child()
    for n in range(4):
        child[n] = done()
    assert len(child) == 2
    assert handle(child).name == "child"
    assert manager.stores["child"] == (handle(child),)
    assert "base" not in manager.stores


def test_largest_order_evicts_unweighed_and_zero_sized_jobs_too(
        manager: MemoryManager) -> None:
    store = dict_store(manager, max_jobs=3, order="largest", size=lambda job: 0)
    for n in range(10):
        store[n] = done()
    assert sorted(store) == [7, 8, 9]


def test_a_user_rule_cannot_evict_an_active_job(manager: MemoryManager) -> None:
    store = dict_store(manager)
    store["run"] = {"status": "running", "result": None}
    store["done"] = done()

    def everything(index: Any, ctx: Pass) -> Any:
        return [(key, Cause.AGE) for key in list(index.created)]

    handle(store).add_rule(everything)
    handle(store).cleanup()
    assert list(store) == ["run"]
    manager.load_policy("[defaults]\nmax_jobs = 9\n")  # added rules survive a reload
    store["done"] = done()
    handle(store).cleanup()
    assert list(store) == ["run"]


def test_touches_with_key_taken_through_kwargs(manager: MemoryManager) -> None:
    @managed_store(manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        @touches(key="job_id")
        def read(self, **kwargs: Any) -> Any:
            return dict.get(self, kwargs["job_id"])

    store = Jobs(a=done(), b=done())
    store.read(job_id="a")
    assert handle(store).recency() == ["b", "a"]


def test_touches_by_store_name_on_a_custom_manager() -> None:
    manager = MemoryManager(clock=FakeClock())

    @managed_store(manager=manager, name="custom_named_store")
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs(a=done(), b=done())

    @touches(store="custom_named_store")
    def read(job_id: str) -> Any:
        return dict.get(store, job_id)

    read("a")
    assert handle(store).recency() == ["b", "a"]


def test_release_given_as_one_string(manager: MemoryManager) -> None:
    store = dict_store(manager, max_jobs=1, release="chart")
    held = {"status": "done", "chart": "png", "result": "kept"}
    store["a"] = held
    store["b"] = done()
    assert held == {"status": "done", "chart": None, "result": "kept"}


def test_copies_are_plain_dicts_that_leave_the_store_alone(manager: MemoryManager) -> None:
    store = dict_store(manager)
    store["a"] = done()
    for duplicate in (copy.copy(store), copy.deepcopy(store), pickle.loads(pickle.dumps(store))):
        assert type(duplicate) is dict and duplicate == store
        del duplicate["a"]
    assert list(handle(store).index.created) == ["a"]


def test_the_job_just_written_is_never_the_victim(manager: MemoryManager) -> None:
    store = dict_store(manager, max_jobs=2)
    store["r1"] = {"status": "running"}
    store["r2"] = {"status": "running"}
    with capture_evictions(manager) as events:
        store["new"] = done("x")
    assert events == []
    assert sorted(store) == ["new", "r1", "r2"]  # over the bound until a job finishes
    dict.__getitem__(store, "r1")["status"] = "done"  # finishes, without a touch
    handle(store).cleanup()
    assert sorted(store) == ["new", "r2"]  # r1 is now the least recently used evictable


def test_bad_mapping_value_and_unmanaged_handle(manager: MemoryManager) -> None:
    @managed_store(manager=manager, mapping="jobs")
    class Store:
        def __init__(self) -> None:
            self.jobs: dict[str, Any] = {}

    with pytest.raises(TypeError, match="must be a dict"):
        Store().jobs = ["not", "a", "mapping"]  # type: ignore[assignment]
    with pytest.raises(TypeError, match="not a managed store"):
        handle({})
    with pytest.raises(StoreDefinitionError, match="managed store already"):
        managed_store(mapping="jobs", manager=manager)(Store)


def test_a_vanished_key_does_not_shift_the_idle_scan(
        manager: MemoryManager, clock: FakeClock) -> None:
    jobs: dict[str, Any] = {"gone": done(), "old": done()}
    h = manager.setup_job_store_cleanup(jobs, "legacy", max_idle=100)
    h.cleanup()  # a marker at t0
    clock.advance(60)
    jobs["fresh"] = done()
    manager.touch_job(jobs, "fresh")  # first seen at t0+60
    h.cleanup()  # a marker at t0+60 (after "fresh")
    del jobs["gone"]  # behind memguard's back
    clock.advance(50)  # t0+110: "old" is idle (> 100 s), "fresh" only 50 s
    report = h.cleanup()
    assert report.by_store == {"legacy": {"idle": 1}}
    assert list(jobs) == ["fresh"]


def test_a_rule_that_keeps_naming_an_active_job_is_stopped(
        manager: MemoryManager, caplog: pytest.LogCaptureFixture) -> None:
    store = dict_store(manager)
    store["run"] = {"status": "running", "result": "r"}
    store["done"] = done()

    def stubborn(index: Any, ctx: Pass) -> Any:
        while len(index) > 0:
            yield next(iter(index.created)), Cause.EXPLICIT  # the running job, forever

    handle(store).add_rule(stubborn)
    finished = threading.Event()
    worker = threading.Thread(target=lambda: (handle(store).cleanup(), finished.set()))
    worker.start()
    assert finished.wait(5), "the pass never ended"
    worker.join(5)
    assert "run" in store and store["run"]["result"] == "r"  # EXPLICIT from a rule: no bypass
    assert "keeps naming job 'run'" in caplog.text


def test_a_writer_holding_a_replaced_mapping_writes_a_plain_dict(
        manager: MemoryManager) -> None:
    from memguard.stores.attribute_stores import ManagedDict

    @managed_store(manager=manager, mapping="jobs", max_jobs=2, name="iac2")
    class Store:
        def __init__(self) -> None:
            self.jobs: dict[str, Any] = {"keep1": done(), "keep2": done()}

    store = Store()
    old = store.jobs
    store.jobs = dict(old)
    ManagedDict.__setitem__(old, "late", done())  # a writer that entered before the swap
    ManagedDict.__getitem__(old, "late")  # and a reader: no error either
    assert sorted(handle(store).index.created) == ["keep1", "keep2"]
    assert sorted(store.jobs) == ["keep1", "keep2"]


def test_the_size_walk_is_bounded_and_scales_its_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from memguard.index import estimate as _sizing

    calls = []
    real = sys.getsizeof

    def counting(obj: Any, default: int = 0) -> int:
        calls.append(1)
        return real(obj, default)

    job = [str(n) * 50 for n in range(10_000)]
    exact = real(job) + sum(real(text) for text in job)
    monkeypatch.setattr(_sizing.sys, "getsizeof", counting)
    estimate = _sizing.estimate_size(job, max_objects=10)
    assert len(calls) <= 10  # bounded in work however long the list
    assert 0.5 * exact <= estimate <= 1.5 * exact  # the sample scaled up to the whole list
    calls.clear()
    rows = [{"id": n, "name": f"row-{n}", "tags": ["a", "b"]} for n in range(50_000)]
    estimate = _sizing.estimate_size({"status": "done", "result": rows})
    assert len(calls) <= 1_000


def test_a_class_update_through_dict_enforces_bounds_and_reweighs(
        manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=3)
    class Jobs(dict):  # type: ignore[type-arg]
        def update(self, *args: Any, **kwargs: Any) -> None:
            dict.update(self, *args, **kwargs)  # invisible to memguard by itself

    store = Jobs()
    store["k0"] = done("x")
    before = handle(store).stats().bytes  # (stats weighs what inserts left to weigh)
    store.update({f"k{n}": done() for n in range(1, 10)})
    assert len(store) == 3
    store.update({"k9": done("y" * 100_000)})
    assert handle(store).stats().bytes >= before + 100_000


def test_a_managed_class_decorated_again_weighs_each_write_once(
        manager: MemoryManager) -> None:
    weighed: list[Any] = []

    def size(job: Any) -> int:
        weighed.append(job)
        return 1

    @managed_store(manager=manager, name="inner")
    class Inner(dict):  # type: ignore[type-arg]
        pass

    @managed_store(manager=manager, name="outer", size=size)
    class Outer(Inner):
        pass

    store = Outer()
    store["a"] = done()
    assert len(weighed) == 1


def test_inserts_leave_a_users_pins_alone(manager: MemoryManager) -> None:
    store = dict_store(manager, max_jobs=1)
    handle(store).pin("a")
    store["a"] = done()
    store["b"] = done()  # over the bound: "a" is pinned, "b" is being written
    store["a"] = done("again")
    assert handle(store).index.pins == {"a": 1}


def test_the_byte_bound_evicts_only_what_counts_toward_it(manager: MemoryManager) -> None:
    store = dict_store(manager, max_bytes=1000)
    store["running"] = {"status": "running", "result": "x" * 5000}  # unweighed while active
    store["big"] = done("x" * 2000)  # weighed, over the bound, but pinned
    handle(store).pin("big")
    store["small"] = {"status": "queued"}
    handle(store).cleanup()
    assert sorted(store) == ["big", "running", "small"]


def test_touch_job_on_a_plain_dict_protects_the_job_it_touches() -> None:
    from memguard import MemoryManager, Policy
    from memguard.testing import FakeClock

    manager = MemoryManager(Policy(), clock=FakeClock(0.0))
    jobs: dict[str, Any] = {}
    manager.setup_job_store_cleanup(jobs, "plain", max_jobs=3)
    for i in range(3):  # written behind memguard's back since the last pass
        jobs[f"j{i}"] = {"status": "done", "result": "r"}
    manager.touch_job(jobs, "j0")  # j0 is used now: j1 and j2 are older
    jobs["j3"] = {"status": "done", "result": "r"}
    manager.run_cleanup()  # over max_jobs by one: the least recently used goes
    assert sorted(jobs) == ["j0", "j2", "j3"]


def test_the_recency_order_is_exact_between_two_writes() -> None:
    from memguard import MemoryManager, Policy
    from memguard.testing import FakeClock

    manager = MemoryManager(Policy(), clock=FakeClock(0.0))

    @managed_store(name="exact", manager=manager, max_jobs=2)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    store["j0"] = {"status": "done"}
    store["j1"] = {"status": "done"}
    _ = store["j0"], store["j1"], store["j0"]  # j0 read last
    store["j2"] = {"status": "done"}  # over the bound: the least recently used goes
    assert sorted(store) == ["j0", "j2"]
    assert handle(store).recency() == ["j0", "j2"]


def test_the_mapping_attribute_adopts_every_assignment_and_stays(manager: MemoryManager) -> None:
    @managed_store(manager=manager, mapping="jobs", max_jobs=2, name="iac")
    class Store:
        def __init__(self) -> None:
            # as frozen dataclasses do (an __init__ that sets nothing is refused: DESIGN 3)
            object.__setattr__(self, "jobs", {"a": done(), "b": done()})

    store = Store()
    store.jobs["c"] = done()  # indexed: the bound of 2 holds
    assert sorted(store.jobs) == ["b", "c"]
    assert sorted(handle(store).index.created) == ["b", "c"]
    with pytest.raises(AttributeError, match="stays"):
        del store.jobs
