"""`JobIndex.repair_after_fork` on indexes left half changed (issue 24, item 1).

A fork can stop another thread anywhere inside a change of an index (it waits at most one
second for the lock). Each case below builds such a half-done state with the index's own
structures, repairs it as a forked child would, and checks the index is whole again: every
job in exactly the orders it belongs to, sizes and byte total agreeing, no job protected as
being written, a job nobody weighed waiting to be weighed. No user code runs in the repair.
"""

from __future__ import annotations

from typing import Any

from memguard.index.job_index import NOTHING, JobIndex
from memguard.index.marks import Epoch

CALLS: list[str] = []  # the predicate and size function calls, in order


def make_index(jobs: dict[Any, Any]) -> JobIndex:
    calls = CALLS

    def active(job: Any) -> bool:
        calls.append("active")
        return bool(job["status"] == "running")

    def size(job: Any) -> int:
        calls.append("size")
        return int(job["size"])

    return JobIndex(job_of=jobs.__getitem__, active=active, sizer=size)


def whole(index: JobIndex) -> list[str]:
    problems = []
    created = set(index.created)
    lru = {k for k in index.lru if not isinstance(k, Epoch)}
    parked = set(index.parked)
    if lru | parked != created or lru & parked:
        problems.append("orders")
    if set(index.aged) != created - parked:
        problems.append("age order")
    sizes = {k: index.size_of(k) for k in created}
    if not {k for k, v in sizes.items() if v is None} <= set(index.unweighed):
        problems.append("unweighed")
    if index.total_bytes != sum(v for v in sizes.values() if v):
        problems.append("bytes")
    if index.writing is not NOTHING:
        problems.append("writing")
    if set(index.epochs) != {k for k in index.lru if isinstance(k, Epoch)}:
        problems.append("epochs")
    if index.pinned_jobs != len(created & set(index.pins)):
        problems.append("pinned")
    return problems


def filled(n: int = 4) -> tuple[dict[Any, Any], JobIndex]:
    jobs = {f"j{i}": {"status": "done", "size": 10} for i in range(n)}
    index = make_index(jobs)
    for i, (key, job) in enumerate(jobs.items()):
        index.add(key, job, float(i))
    return jobs, index


def test_a_job_cut_off_inside_its_size_function_is_weighed_at_the_next_recheck() -> None:
    jobs, index = filled()
    jobs["new"] = {"status": "done", "size": 7}
    # `add` stopped inside the size function: created and ordered, not weighed, not pending
    index.created["new"] = 9.0
    index.orders.aged["new"] = None
    index.orders.lru["new"] = None
    index.writing = "new"
    calls = len(CALLS)
    index.repair_after_fork()
    assert len(CALLS) == calls  # no user code ran
    assert whole(index) == []
    assert "new" in index.unweighed and "new" in index.known_active
    index.recheck()
    assert index.size_of("new") == 7 and index.total_bytes == 47
    assert not index.unweighed and not index.known_active
    assert whole(index) == []


def test_half_parked_and_half_unparked_jobs_are_put_back_in_one_place() -> None:
    _, index = filled()
    orders = index.orders
    orders.parked["j1"] = orders.lru.pop("j1")  # `park` stopped before leaving `aged`
    orders.lru["j2"] = orders.parked["j2"] = 10  # in both: `unpark` half done
    del orders.aged["j3"]  # a job that left `aged` only
    index.total_bytes = 12345
    index.repair_after_fork()
    assert whole(index) == []
    assert "j1" in orders.parked and "j1" not in orders.aged
    assert "j2" in orders.parked and "j2" not in orders.lru and index.size_of("j2") == 10
    assert "j3" in orders.aged and index.size_of("j3") == 10
    assert index.total_bytes == 40


def test_a_half_removed_job_leaves_every_order() -> None:
    _, index = filled()
    del index.created["j0"]  # `remove` stopped right after dropping the creation time
    index.unweighed["j0"] = None
    index.repair_after_fork()
    assert whole(index) == []
    assert "j0" not in index.lru and "j0" not in index.aged and "j0" not in index.unweighed
    assert index.total_bytes == 30


def test_half_laid_and_half_dropped_epoch_markers_go() -> None:
    _, index = filled()
    laid, dropped = Epoch(5.0), Epoch(6.0)
    index.orders.lru[laid] = None  # `lay_epoch` stopped before recording the marker
    index.orders.epochs.append(dropped)  # `drop_epoch` stopped after taking it out of lru
    index.repair_after_fork()
    assert whole(index) == []
    assert laid not in index.orders.lru and dropped not in index.orders.epochs


def test_the_pinned_count_is_counted_again() -> None:
    _, index = filled()
    index.pins["j1"] = 1  # `pin` stopped before counting the pinned job
    index.pins["later"] = 1  # a pin waiting for its job: not counted
    index.repair_after_fork()
    assert index.pinned_jobs == 1
    assert index.resync is True  # the store compares its keys at its next pass
