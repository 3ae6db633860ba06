"""The global emergency order (DESIGN section 10) on real stores and a fake clock.

Victims come from all stores in one order: delivered results (read after they finished),
oldest delivery first; then undelivered results, oldest finished first; active jobs never.
A job completed in place (the store never sees the write) is finished for the index from
the re-check that finds it so, and delivered by a read after that.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from memguard import MemoryManager, Policy, handle, managed_store
from memguard.eviction.tiers import TIERS
from memguard.testing import FakeClock, FakeProbe, capture_evictions


def sized(manager: MemoryManager, name: str) -> Any:
    """A dict-subclass store whose jobs weigh what their `size` says."""

    @managed_store(name=name, manager=manager, size=lambda job: job.get("size", 0))
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    return Jobs()


def mapped(manager: MemoryManager, name: str) -> Any:
    """A `mapping=` store (jobs in its `jobs` attribute) of the same kind."""

    @managed_store(name=name, manager=manager, mapping="jobs",
                   size=lambda job: job.get("size", 0))
    class Service:
        def __init__(self) -> None:
            self.jobs: dict[str, Any] = {}

    return Service()


def done(size: int = 100) -> dict[str, Any]:
    return {"status": "done", "size": size, "result": "r"}


def running(size: int = 100) -> dict[str, Any]:
    return {"status": "running", "size": size, "result": None}


@pytest.fixture
def manager() -> MemoryManager:
    return MemoryManager(Policy(), clock=FakeClock(0.0), probe=FakeProbe("100MB", "512MB"))


def evicted(manager: MemoryManager, amount: int) -> list[str]:
    with capture_evictions(manager) as events:
        manager.evict_bytes(amount)
    return [event.key for event in events]


def test_the_default_emergency_order_is_the_global_delivered_order() -> None:
    assert Policy().memory.emergency_order == "delivered"
    assert TIERS == ("delivered", "expired", "finished")


def test_delivered_results_go_first_across_stores_then_the_oldest_finished(
        manager: MemoryManager) -> None:
    big, small, service = sized(manager, "big"), sized(manager, "small"), mapped(manager, "svc")
    big["b1"] = done(1000)
    small["s1"] = done(10)
    service.jobs["v1"] = done(10)
    big["b2"] = done(1000)
    small["s2"] = done(10)
    service.jobs["v2"] = done(10)
    service.jobs["v2"]  # read after it finished: delivered (first)
    manager.notice_finished()  # a monitor sample: the reads are drained, deliveries dated
    small["s1"]  # delivered (second)
    big["b3"] = done(1000)  # drains big's reads (none), stamps b3 finished
    # Store by store, largest first, "big" would pay for it all and lose b1, b2 and b3
    # although nobody read them; in the global order the two delivered results go first.
    assert evicted(manager, 20) == ["v2", "s1"]
    # then the undelivered ones, oldest finished first, whatever store holds them
    assert evicted(manager, 2010) == ["b1", "v1", "b2"]
    assert sorted(big) == ["b3"] and sorted(small) == ["s2"] and not service.jobs


def test_the_oldest_delivery_goes_first_and_a_new_read_makes_it_recent(
        manager: MemoryManager) -> None:
    a, b = sized(manager, "a"), sized(manager, "b")
    a["x"] = done()
    b["y"] = done()
    for store, key in ((a, "x"), (b, "y"), (a, "x")):  # "x" read again: now the most recent
        store[key]
        manager.notice_finished()  # a sample between two reads dates each delivery
    assert evicted(manager, 100) == ["y"]


def test_active_jobs_are_never_evicted_however_much_is_asked(manager: MemoryManager) -> None:
    a, b = sized(manager, "a"), sized(manager, "b")
    a["run"] = running(10_000)
    b["pend"] = {"status": "pending", "size": 10_000}
    a["fin"] = done()
    assert evicted(manager, 10**9) == ["fin"]
    assert "run" in a and "pend" in b


def test_a_job_completed_in_place_is_finished_when_the_recheck_finds_it(
        manager: MemoryManager) -> None:
    a, b = sized(manager, "a"), sized(manager, "b")
    a["early"] = running()
    b["later"] = done()  # finished (and stamped) at its write
    a["early"]["status"] = "done"  # completed in place: the store never sees it
    manager.notice_finished()  # what the monitor does at each sample: found finished now
    # finished after "later" as far as the index knows: "later" is the older finish
    assert evicted(manager, 100) == ["later"]


def test_a_poll_before_the_index_learned_of_the_finish_is_no_delivery(
        manager: MemoryManager) -> None:
    a, b = sized(manager, "a"), sized(manager, "b")
    a["polled"] = running()
    b["old"] = done()
    a["polled"]  # a poll that found it running
    a["polled"]["status"] = "done"
    a["polled"]  # read again, but pending when the re-check finds it finished
    manager.notice_finished()
    # "polled" counts as undelivered (finished after "old"): "old" goes first
    assert evicted(manager, 100) == ["old"]
    assert "polled" in a


def test_a_read_after_the_recheck_is_a_delivery(manager: MemoryManager) -> None:
    a, b = sized(manager, "a"), sized(manager, "b")
    b["unread"] = done()
    a["job"] = running()
    a["job"]["status"] = "done"
    manager.notice_finished()
    a["job"]  # its client reads it now: delivered
    assert evicted(manager, 100) == ["job"]
    assert "unread" in b


def test_the_emergency_itself_finds_jobs_completed_in_place(manager: MemoryManager) -> None:
    a = sized(manager, "a")
    a["j1"] = running()
    a["j2"] = running()
    a["j1"]["status"] = "done"
    a["j2"]["status"] = "done"
    # no sample ran: the emergency's own re-check of every active job finds both finished
    assert evicted(manager, 200) == ["j1", "j2"]


def test_a_job_written_running_again_leaves_the_tiers(manager: MemoryManager) -> None:
    a = sized(manager, "a")
    a["again"] = done()
    a["again"]  # delivered
    a["again"] = running()  # a new run under the same key
    a["other"] = done()
    assert evicted(manager, 10**6) == ["other"]
    assert "again" in a


def test_a_job_set_running_in_place_is_not_evicted(manager: MemoryManager) -> None:
    a = sized(manager, "a")
    a["x"] = done()
    a["x"]
    a["x"]["status"] = "running"  # in place: the index still has it delivered
    a["y"] = done()
    assert evicted(manager, 10**6) == ["y"]
    assert "x" in a


def test_pinned_jobs_are_stepped_over_and_stay(manager: MemoryManager) -> None:
    a = sized(manager, "a")
    for key in ("p", "q", "r"):
        a[key] = done()
    with handle(a).in_use("p"):
        assert evicted(manager, 150) == ["q", "r"]
    assert list(a) == ["p"]


@pytest.mark.parametrize("order, first", [("lru", "a2"), ("oldest", "a1"), ("largest", "a2"),
                                          ("delivered", "a1")])
def test_explicit_orders_still_go_store_by_store(order: str, first: str) -> None:
    policy = Policy.from_toml(f'[memory]\nemergency_order = "{order}"\n')
    manager = MemoryManager(policy, clock=FakeClock(0.0), probe=FakeProbe("100MB", "512MB"))
    a, b = sized(manager, "a"), sized(manager, "b")
    a["a1"] = done(400)
    a["a2"] = done(600)
    b["b1"] = done(600)
    a["a1"]  # read: the most recent in "a", and delivered
    # lru, oldest, largest: the largest store ("a") first, in that order within it
    assert evicted(manager, 100) == [first]


def test_many_victims_across_batches_keep_the_global_order(manager: MemoryManager) -> None:
    stores = [sized(manager, f"s{i}") for i in range(3)]
    expected = []
    for n in range(200):  # more than one candidate batch (32) per store
        stores[n % 3][f"k{n}"] = done(1)
        expected.append(f"k{n}")
    delivered = [f"k{n}" for n in range(0, 200, 7)]
    for key in delivered:
        stores[int(key[1:]) % 3][key]
        # a delivery is dated when the store's reads are drained (at its next write, at
        # each monitor sample, at a pass): drain after each read, as a sample would
        manager.notice_finished()
    rest = [key for key in expected if key not in delivered]
    assert evicted(manager, 150) == (delivered + rest)[:150]


def test_deliveries_are_dated_when_their_store_drains_its_reads(
        manager: MemoryManager) -> None:
    a, b = sized(manager, "a"), sized(manager, "b")
    a["x"] = done()
    b["y"] = done()
    a["x"]
    b["y"]
    b["z"] = done()  # a write to "b" drains its reads: "y" is delivered now, "x" later
    assert evicted(manager, 100) == ["y"]


def test_emergencies_in_the_global_order_race_writers_and_readers_safely() -> None:
    """Real threads: writers store running jobs and complete them in place, readers poll,
    another thread re-checks and runs emergencies in the global order. No running job is
    ever evicted, nothing raises, and each index ends with exactly its store's keys in
    disjoint tiers."""
    manager = MemoryManager(Policy(), probe=FakeProbe("100MB", "512MB"))
    stores = [sized(manager, "t1"), sized(manager, "t2"), mapped(manager, "t3").jobs]
    stop = threading.Event()
    errors: list[BaseException] = []
    evicted_running: list[str] = []

    def guard(work: Any) -> Any:
        def run() -> None:
            try:
                work()
            except BaseException as error:
                errors.append(error)
        return run

    def writer(at: int) -> None:
        store, n = stores[at], 0
        while not stop.is_set():
            key = f"w{at}-{n}"
            job = running(50)
            store[key] = job
            time.sleep(0.0005)  # the "work": emergencies run meanwhile
            if key not in store:  # only emergencies remove jobs here
                evicted_running.append(key)
            job["status"] = "done"  # in place
            n += 1

    def reader() -> None:
        while not stop.is_set():
            for store in stores:
                for key in list(store)[-5:]:
                    store.get(key)

    def emergencies() -> None:
        while not stop.is_set():
            manager.notice_finished()
            manager.evict_bytes(2_000)

    threads = [threading.Thread(target=guard(lambda at=at: writer(at))) for at in range(3)]
    threads += [threading.Thread(target=guard(reader)), threading.Thread(target=guard(emergencies))]
    for thread in threads:
        thread.start()
    stop.wait(2.0)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert not errors, errors
    assert not evicted_running
    for store in stores:
        index = handle(store).index
        with index.lock:
            assert set(index.created) == set(store)
            assert not set(index.orders.delivered) & set(index.orders.finished)
            assert set(index.orders.delivered) | set(index.orders.finished) <= set(store)


def test_jobs_past_a_soft_bound_go_after_delivered_results_and_before_unread_ones() -> None:
    """The middle tier: a soft store's expired jobs go once every store's delivered results
    are gone, and before any result nobody has read (DESIGN section 10's order)."""
    clock = FakeClock(0.0)
    manager = MemoryManager(Policy(), clock=clock, probe=FakeProbe("100MB", "512MB"))
    unread = sized(manager, "unread")

    @managed_store(name="soft", manager=manager, max_age="10m", bounds="soft",
                   size=lambda job: job.get("size", 0))
    class SoftJobs(dict):  # type: ignore[type-arg]
        pass

    soft = SoftJobs()
    read = sized(manager, "read")
    unread["u1"] = done()
    soft["old"] = done()
    read["r1"] = done()
    read["r1"]  # delivered
    manager.notice_finished()
    clock.advance(601)  # "old" is past its soft max_age; nothing evicts it with room to spare
    soft["young"] = done()
    assert manager.run_cleanup().evicted == 0 and "old" in soft
    assert evicted(manager, 150) == ["r1", "old"]
    assert evicted(manager, 50) == ["u1"]
    assert sorted(soft) == ["young"]
