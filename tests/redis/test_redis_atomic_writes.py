"""Issue 23, items 3 and 4: multi-field writes are one atomic write (no reader sees a job
half-updated), and a job object whose id was deleted and reused never writes into the new
job. Real redis-server, real threads."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from memguard import MemoryManager, Policy, handle, managed_store
from memguard.redis import RedisStore
from memguard.testing import FakeProbe


def store_class(manager: MemoryManager) -> Any:
    @managed_store(name="jobs", manager=manager)
    class Jobs(RedisStore):
        pass

    return Jobs


@pytest.fixture
def manager() -> MemoryManager:
    return MemoryManager(Policy(), probe=FakeProbe("100MB"))


def test_update_is_seen_whole_by_concurrent_readers(redis_url: str,
                                                    manager: MemoryManager) -> None:
    """A worker finishes jobs with one `update`; pollers in other threads (own clients)
    never see `done` without its result and progress, nor a cleared or refilled job
    half-way (small fields: one read; a result is fetched after its status)."""
    jobs = store_class(manager)
    writer_store = jobs(redis_url)
    stop = threading.Event()
    latest = ["k0"]
    torn: list[dict[str, Any]] = []
    polls = [0]

    def poll() -> None:
        reader = jobs(redis_url)
        while not stop.is_set():
            for key in (latest[0], "cycled"):
                job = reader.get(key)
                if job is None:
                    continue
                polls[0] += 1
                small = dict(dict.items(job))  # the one read of the small fields
                if small and (small.get("status") == "done") != (small.get("progress") == 100):
                    torn.append(small)
                if key != "cycled" and small.get("status") == "done" and job["result"] is None:
                    torn.append(job.copy())

    readers = [threading.Thread(target=poll) for _ in range(3)]
    for thread in readers:
        thread.start()
    try:
        for round_ in range(300):
            key = f"k{round_}"
            writer_store[key] = {"status": "running", "result": None, "progress": 0}
            latest[0] = key
            writer_store[key].update(status="done", result={"n": round_}, progress=100)
            writer_store["cycled"] = {"status": "running", "progress": 0}
            cycled = writer_store["cycled"]
            cycled.update(status="done", progress=100)
            cycled.clear()
            cycled |= {"status": "running", "progress": 0}
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert polls[0] > 300 and torn == [], (polls[0], torn[:3])


def test_update_is_one_write_for_the_active_rule(redis_url: str,
                                                 manager: MemoryManager) -> None:
    store = store_class(manager)(redis_url)
    store["a"] = {"status": "running", "result": None}
    store["a"].update(status="done", result=[1, 2])
    assert handle(store).stats().active == 0
    assert store["a"] == {"status": "done", "result": [1, 2]}
    store["a"].update({"status": "pending"}, note="again")
    assert handle(store).stats().active == 1
    store["a"].clear()
    assert store["a"] == {} and handle(store).stats().active == 0


def test_stale_job_object_never_writes_into_a_reused_id(redis_url: str,
                                                        manager: MemoryManager) -> None:
    store = store_class(manager)(redis_url)
    store["a"] = {"status": "running", "result": None, "step": 1}
    stale = store["a"]
    del store["a"]
    store["a"] = {"status": "running", "result": None, "step": 0}
    stale["status"] = "done"
    stale["result"] = "old worker's result"
    stale.update(step=99)
    del stale["step"]
    stale.clear()
    assert store["a"] == {"status": "running", "result": None, "step": 0}
    assert handle(store).stats().active == 1
    assert stale.refresh() == {}  # bound to the job that was deleted: not rebound

    # replaced without a delete: the same; a job stored back under its own id stays live
    fresh = store["a"]
    store["a"] = {"status": "queued"}
    fresh["status"] = "done"
    assert store["a"] == {"status": "queued"}
    live = store["a"]
    live["x"] = 1
    store["a"] = live
    live["y"] = 2
    assert store["a"] == {"status": "queued", "x": 1, "y": 2}


def test_reserved_field_names_refused(redis_url: str, manager: MemoryManager) -> None:
    store = store_class(manager)(redis_url)
    with pytest.raises(ValueError, match="reserved"):
        store["a"] = {"\x00g": 1}
    store["a"] = {"status": "done"}
    with pytest.raises(ValueError, match="reserved"):
        store["a"].update({"\x00g": "7"})
