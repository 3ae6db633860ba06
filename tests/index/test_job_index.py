"""`JobIndex` on its own: recency, age, sizes, pins and the candidate orders, with no store.

The index reads jobs through `job_of`, so a plain dict stands in for the store here (one
test of the largest order goes through a real store's insert path).
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from memguard import MemoryManager, handle, managed_store
from memguard.index.job_index import NOTHING, JobIndex
from memguard.testing import FakeClock, capture_evictions


def index_over(jobs: dict[str, Any]) -> JobIndex:
    return JobIndex(job_of=jobs.__getitem__,
                    active=lambda job: job.get("status") == "running",
                    sizer=lambda job: len(job.get("result") or ""))


def store(jobs: dict[str, Any], index: JobIndex, key: str, job: Any, now: float = 0.0) -> None:
    jobs[key] = job
    with index.lock:
        index.add(key, job, now)


def test_recency_follows_the_last_read_and_write() -> None:
    jobs: dict[str, Any] = {}
    index = index_over(jobs)
    for key in ("a", "b", "c"):
        store(jobs, index, key, {"status": "done", "result": "x"})
    for key in ("a", "b", "a"):  # reads between two writes: the last read counts
        index.touch(key)
    assert index.recency() == ["c", "b", "a"]
    store(jobs, index, "b", {"status": "done", "result": "y"})  # a write is a touch
    assert index.recency() == ["c", "a", "b"]
    index.touch("ghost")  # unknown keys are ignored: the read set never outgrows the store
    assert "ghost" not in index.reads


def test_sizes_are_weighed_when_a_job_is_no_longer_active() -> None:
    jobs: dict[str, Any] = {}
    index = index_over(jobs)
    store(jobs, index, "done", {"status": "done", "result": "x" * 100})
    store(jobs, index, "busy", {"status": "running", "result": None})
    assert index.total_bytes == 100 and index.size_of("busy") is None
    jobs["busy"]["status"], jobs["busy"]["result"] = "done", "y" * 40  # finished in place
    with index.lock:
        index.recheck()  # what a pass does
    assert index.total_bytes == 140
    with index.lock:
        assert index.remove("done") == 100
    assert index.total_bytes == 40 and len(index) == 1


def test_candidates_skip_active_and_pinned_jobs_in_every_order() -> None:
    jobs: dict[str, Any] = {}
    index = index_over(jobs)
    store(jobs, index, "small", {"status": "done", "result": "x"}, now=1.0)
    store(jobs, index, "busy", {"status": "running", "result": None}, now=2.0)
    store(jobs, index, "big", {"status": "done", "result": "x" * 50}, now=3.0)
    store(jobs, index, "held", {"status": "done", "result": "x" * 90}, now=4.0)
    with index.lock:
        index.pin("held")
    index.touch("small")  # now the most recent
    with index.lock:
        orders = {}
        for order in ("lru", "oldest", "largest"):
            seen = []
            for key in index.candidates(order):
                seen.append(key)
                index.remove(key)  # the consumer removes what it takes
                del jobs[key]
            orders[order] = seen
            for key, job, when in (("small", {"status": "done", "result": "x"}, 1.0),
                                   ("big", {"status": "done", "result": "x" * 50}, 3.0)):
                store(jobs, index, key, job, now=when)
            index.touch("small")
    assert orders["lru"] == ["big", "small"]
    assert orders["oldest"] == ["small", "big"]
    assert orders["largest"] == ["big", "small"]


def test_a_kept_candidate_ends_the_scan() -> None:
    jobs: dict[str, Any] = {}
    index = index_over(jobs)
    for key in ("a", "b", "c"):
        store(jobs, index, key, {"status": "done", "result": "x"})
    with index.lock:
        taken = list(index.candidates("lru"))  # nothing removed: the first is kept
    assert taken == ["a"]


def test_idle_is_dated_by_the_epochs_laid_at_passes() -> None:
    jobs: dict[str, Any] = {}
    index = index_over(jobs)
    store(jobs, index, "old", {"status": "done", "result": "x"})
    store(jobs, index, "read", {"status": "done", "result": "x"})
    with index.lock:
        index.lay_epoch(10.0)  # a pass at t=10: everything so far was touched by then
    index.touch("read")
    with index.lock:
        index.lay_epoch(20.0)
        assert list(index.idle_before(15.0)) == ["old"]  # untouched since before t=10
        assert list(index.created_before(0.0)) == ["old"]


# -- the largest order ------------------------------------------------------------------------

SIZES = st.integers(min_value=0, max_value=6)  # few sizes: ties, and jobs of zero size
KEYS = st.sampled_from([f"j{i}" for i in range(8)])


def job(status: str, size: int) -> dict[str, Any]:
    return {"status": status, "result": "x" * size}


class LargestOrderMachine(RuleBasedStateMachine):
    """`candidates("largest")` against the obvious model: among the evictable jobs (stored,
    not running, not pinned, not being written), one of the largest first, and jobs of zero
    size only once no weighed job is left; never one that is active or pinned. Jobs change
    through writes (sizes re-weighed), pins, deletions, reads, and jobs finished in place
    followed by a recheck (what a pass does); victims are taken by walks that stop anywhere,
    and by walks that keep their first candidate. Jobs are also set back to running in place
    (no write), which a walk finds and steps over."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, Any] = {}
        self.index = index_over(self.jobs)
        self.pins: dict[str, int] = {}
        self.restarted: set[str] = set()  # set back to running in place, after a weighing

    def evictable(self, key: str, writing: object = NOTHING) -> bool:
        return (self.jobs[key]["status"] != "running" and key not in self.pins
                and key != writing)

    def check_victim(self, key: str, weighed_only: bool, writing: object = NOTHING) -> None:
        assert key in self.jobs and self.evictable(key, writing), key
        size = len(self.jobs[key]["result"])
        sizes = [len(self.jobs[k]["result"]) for k in self.jobs if self.evictable(k, writing)]
        assert size == max(sizes), (key, size, sizes)
        assert size or not weighed_only

    def take(self, most: int, weighed_only: bool, writing: object = NOTHING) -> list[str]:
        taken = []
        with self.index.lock:
            self.index.writing = writing
            try:
                for key in self.index.candidates("largest", weighed_only=weighed_only):
                    self.check_victim(key, weighed_only, writing)
                    taken.append(key)
                    del self.jobs[key]
                    self.index.remove(key)
                    if len(taken) >= most:
                        break
            finally:
                self.index.writing = NOTHING
        return taken

    @rule(key=KEYS, size=SIZES, running=st.booleans())
    def write(self, key: str, size: int, running: bool) -> None:
        self.restarted.discard(key)
        store(self.jobs, self.index, key, job("running" if running else "done", size))

    @rule(key=KEYS, size=SIZES)
    def finish_in_place(self, key: str, size: int) -> None:
        if key in self.jobs and self.jobs[key]["status"] == "running":
            self.jobs[key]["status"] = "done"
            if key not in self.restarted:  # weighed already: its result stays as it was
                self.jobs[key]["result"] = "x" * size
            self.restarted.discard(key)
            with self.index.lock:
                self.index.recheck()

    @rule(key=KEYS)
    def restart_in_place(self, key: str) -> None:
        if key in self.jobs and self.jobs[key]["status"] == "done":
            self.jobs[key]["status"] = "running"  # no write: the index sees it at its next look
            self.restarted.add(key)

    @rule(key=KEYS)
    def pin(self, key: str) -> None:
        with self.index.lock:
            self.index.pin(key)
        self.pins[key] = self.pins.get(key, 0) + 1

    @rule(key=KEYS)
    def unpin(self, key: str) -> None:
        if key in self.pins:
            with self.index.lock:
                self.index.unpin(key)
            self.pins[key] -= 1
            if not self.pins[key]:
                del self.pins[key]

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        if key in self.jobs:
            del self.jobs[key]
            self.restarted.discard(key)
            self.pins.pop(key, None)  # a job that leaves the store takes its pins along
            with self.index.lock:
                self.index.remove(key)

    @rule(key=KEYS)
    def read(self, key: str) -> None:
        self.index.touch(key)

    @rule(most=st.integers(min_value=1, max_value=8), weighed_only=st.booleans())
    def evict(self, most: int, weighed_only: bool) -> None:
        before = [k for k in self.jobs if self.evictable(k)
                  and (len(self.jobs[k]["result"]) or not weighed_only)]
        taken = self.take(most, weighed_only)
        assert len(taken) == min(most, len(before))  # every evictable job is reachable

    @rule(key=KEYS, size=SIZES)
    def insert_over_a_bound(self, key: str, size: int) -> None:
        self.restarted.discard(key)
        store(self.jobs, self.index, key, job("done", size))
        assert key not in self.take(1, False, writing=key)  # never the job being written

    @rule(weighed_only=st.booleans())
    def keep_the_first(self, weighed_only: bool) -> None:
        with self.index.lock:
            first = next(iter(self.index.candidates("largest", weighed_only=weighed_only)),
                         None)
        if first is not None:  # kept, not removed: the next walk must offer it again
            self.check_victim(first, weighed_only)

    @invariant()
    def sizes_add_up(self) -> None:
        index = self.index
        assert set(index.keys()) == set(self.jobs)
        weighed = [k for k in self.jobs if self.jobs[k]["status"] != "running"
                   and k not in self.pins]
        assert all(index.size_of(k) == len(self.jobs[k]["result"]) for k in weighed)
        assert index.total_bytes == sum(index.size_of(k) or 0 for k in self.jobs)
        largest = index.orders.largest
        assert largest is None or len(largest.heap) <= largest.limit


TestLargestOrder = LargestOrderMachine.TestCase
TestLargestOrder.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)


def test_the_largest_heap_stays_bounded_under_rewrites() -> None:
    jobs: dict[str, Any] = {}
    index = index_over(jobs)
    for i in range(10):
        store(jobs, index, f"j{i}", job("done", i + 1))
    with index.lock:
        assert next(index.candidates("largest")) == "j9"  # kept: the heap is built
    for round_ in range(500):  # every write re-weighs: a new entry, the old one stale
        for i in range(10):
            store(jobs, index, f"j{i}", job("done", (i * 7 + round_) % 13 + 1))
        with index.lock:
            first = next(index.candidates("largest"))
        assert len(jobs[first]["result"]) == max(len(j["result"]) for j in jobs.values())
        largest = index.orders.largest
        assert largest is not None and len(largest.heap) <= 2 * 10 + 64 + 10


def test_the_largest_heap_is_dropped_when_no_walk_uses_it() -> None:
    jobs: dict[str, Any] = {}
    index = index_over(jobs)
    store(jobs, index, "a", job("done", 5))
    with index.lock:
        list(index.candidates("largest"))  # an emergency in largest order, once
    assert index.orders.largest is not None
    for i in range(200):  # then only writes: the heap is not kept up for nothing
        store(jobs, index, "a", job("done", i % 9 + 1))
    assert index.orders.largest is None
    with index.lock:
        assert list(index.candidates("largest")) == ["a"]  # rebuilt when asked again


def test_a_job_seen_running_in_a_largest_walk_comes_back_when_it_finishes() -> None:
    jobs: dict[str, Any] = {}
    index = index_over(jobs)
    store(jobs, index, "big", job("done", 90))
    store(jobs, index, "small", job("done", 10))
    with index.lock:
        assert next(index.candidates("largest")) == "big"  # builds the heap; kept
    jobs["big"]["status"] = "running"  # set back in place (no write): a walk drops it
    with index.lock:
        assert next(index.candidates("largest")) == "small"
        jobs["big"]["status"] = "done"
        index.recheck()  # a pass sees it finished: a candidate again, by its size
        assert next(index.candidates("largest")) == "big"


def test_a_store_in_largest_order_evicts_its_largest_evictable_job_at_each_insert() -> None:
    # Through a real store: the insert path (the job being written, the recheck of jobs
    # that finished in place), pins and re-weighing writes, as the bound meets them.
    manager = MemoryManager(clock=FakeClock(0.0))

    @managed_store(manager=manager, max_jobs=4, order="largest",
                   size=lambda job: len(job["result"] or ""))
    class Jobs(dict):  # type: ignore[type-arg]
        """Four jobs at most, the largest evicted first."""

    jobs = Jobs()
    jobs["run"] = job("running", 0)
    for key, size in (("a", 30), ("b", 10), ("c", 20)):
        jobs[key] = job("done", size)
    store_handle = handle(jobs)
    with capture_evictions(manager) as events:
        jobs["d"] = job("done", 50)  # the largest, but being written: "a" goes
        jobs["b"] = job("done", 60)  # re-weighed by its write (no eviction: still 4 jobs)
        store_handle.pin("b")
        jobs["e"] = job("done", 5)  # "b" is pinned: "d"
        jobs["run"]["status"], jobs["run"]["result"] = "done", "x" * 99  # finished in place
        jobs["f"] = job("done", 1)  # the insert's recheck weighs it: the largest now
        store_handle.unpin("b")
        jobs["g"] = job("done", 1)
    assert [event.key for event in events] == ["a", "d", "run", "b"]
    assert sorted(jobs) == ["c", "e", "f", "g"]
