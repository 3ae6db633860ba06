"""`JobIndex` on its own: recency, age, sizes, pins and the candidate orders, with no store.

The index reads jobs through `job_of`, so a plain dict stands in for the store here.
"""

from __future__ import annotations

from typing import Any

from memguard.tracking import JobIndex


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
