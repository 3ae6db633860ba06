"""`max_running` (DESIGN section 3): a job left active by a dead worker is evicted as
`abandoned` once it has not been written for that long, in-process and in Redis alike; and
stuck active jobs never make inserts walk past them."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from memguard import Cause, MemoryManager, Policy, handle, managed_store
from memguard.redis import RedisStore
from memguard.testing import FakeClock, FakeProbe


def test_in_process_abandoned_job_evicted_once_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    manager = MemoryManager(Policy(), probe=FakeProbe("100MB"), clock=clock)
    events: list[Any] = []
    manager.on_evict(events.append)

    @managed_store(name="jobs", manager=manager, max_running="10m")
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    jobs = Jobs()
    jobs["stuck"] = {"status": "running"}
    jobs["alive"] = {"status": "running"}
    jobs["done"] = {"status": "done"}
    clock.advance(300)
    jobs["alive"] = {"status": "running", "progress": 50}  # written again: its clock restarts
    clock.advance(301)
    with caplog.at_level(logging.WARNING, logger="memguard"):
        handle(jobs).cleanup()
        handle(jobs).cleanup()
    assert [(e.key, e.cause) for e in events] == [("stuck", Cause.ABANDONED)]
    assert sorted(jobs) == ["alive", "done"]  # finished jobs are not max_running's business
    assert sum("'stuck'" in r.getMessage() and "abandoned" in r.getMessage()
               for r in caplog.records) == 1
    assert handle(jobs).stats().evictions == {"abandoned": 1}
    clock.advance(300)
    handle(jobs).cleanup()
    assert sorted(jobs) == ["done"]


def test_in_process_without_max_running_active_is_forever() -> None:
    clock = FakeClock()
    manager = MemoryManager(Policy(), probe=FakeProbe("100MB"), clock=clock)

    @managed_store(name="jobs", manager=manager, max_age="1m")
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    jobs = Jobs()
    jobs["stuck"] = {"status": "running"}
    clock.advance(10**6)
    handle(jobs).cleanup()
    assert list(jobs) == ["stuck"]


def test_max_running_from_toml_defaults() -> None:
    policy = Policy.from_toml('[defaults]\nmax_running = "2h"\n'
                              '[stores.other]\nmax_running = "5m"\n', environ={})
    assert policy.store_policy("jobs", {}).max_running == 7200
    assert policy.store_policy("other", {}).max_running == 300
    with pytest.raises(ValueError, match="max_running"):
        Policy.from_toml('[defaults]\nmax_running = "soon"\n', environ={})


def redis_jobs(manager: MemoryManager, url: str, **options: Any) -> Any:
    @managed_store(name="jobs", manager=manager, **options)
    class Jobs(RedisStore):
        pass

    return Jobs(url)


def test_redis_abandoned_job_evicted(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    manager = MemoryManager(Policy(), probe=FakeProbe("100MB"))
    events: list[Any] = []
    manager.on_evict(events.append)
    jobs = redis_jobs(manager, redis_url, max_running=0.5)
    jobs["stuck"] = {"status": "running", "result": None}
    jobs["alive"] = {"status": "running", "result": None}
    jobs["done"] = {"status": "done", "result": 1}
    time.sleep(0.3)
    jobs["alive"]["progress"] = 50  # a field write is a write: its clock restarts
    time.sleep(0.3)
    with caplog.at_level(logging.WARNING, logger="memguard"):
        handle(jobs).cleanup()
        handle(jobs).cleanup()
    assert [(e.key, e.cause) for e in events] == [("stuck", Cause.ABANDONED)]
    assert sorted(jobs) == ["alive", "done"]
    assert sum("'stuck'" in r.getMessage() and "abandoned" in r.getMessage()
               for r in caplog.records) == 1
    jobs["alive"]["status"] = "done"  # finished: no longer watched
    time.sleep(0.6)
    handle(jobs).cleanup()
    assert sorted(jobs) == ["alive", "done"]
    assert handle(jobs).stats().active == 0


def test_redis_insert_does_not_walk_past_stuck_jobs(redis_url: str) -> None:
    """20k running jobs at the head of every order: an insert into the full store costs
    about what it costs into a store without them (the issue saw 0.5 ms become 78 ms)."""
    import redis as redis_py

    manager = MemoryManager(Policy(), probe=FakeProbe("100MB"))
    jobs = redis_jobs(manager, redis_url, max_jobs=50)

    def insert_cost(count: int) -> float:
        for i in range(count):
            jobs[f"f{i}"] = {"status": "done", "result": i}
        start = time.perf_counter()
        for i in range(200):
            jobs[f"n{i}"] = {"status": "done", "result": i}
        return (time.perf_counter() - start) / 200

    baseline = insert_cost(60)
    jobs.clear()
    with redis_py.Redis.from_url(redis_url) as client:
        # 20k stuck jobs stored fast through the store's own script, pipelined
        core = jobs._core
        pipe = client.pipeline(transaction=False)
        for i in range(20_000):
            core.link.scripts.put(keys=core.keys, args=(
                core.base, f"s{i}", "0", *core.active_args(None), "", "", "lru",
                1, "status", b'"running"', 0), client=pipe)
        pipe.execute()
    assert handle(jobs).stats().active == 20_000
    stuck = insert_cost(60)
    assert len(jobs) == 20_001  # active jobs count toward max_jobs: only the newest stays
    assert stuck < 3 * baseline + 0.001, (stuck, baseline)
