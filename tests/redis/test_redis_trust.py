"""Issue 23: Redis stores that stay trustworthy when Redis misbehaves (DESIGN section 8,
"Trust"). Real redis-server processes started by the tests; each test is one fault seen from
the user's side."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from memguard import Cause, MemoryManager, Policy, managed_store
from memguard.redis import RedisConfigError, RedisFull, RedisStore, RedisUnavailable
from memguard.testing import FakeProbe, capture_evictions
from tests.redis.conftest import RedisServer


def make_store(manager: MemoryManager, url: str, **options: Any) -> Any:
    store_options = {k: options.pop(k) for k in ("allow_redis_eviction", "serializer")
                     if k in options}

    @managed_store(name="jobs", manager=manager, **options)
    class Jobs(RedisStore):
        pass

    return Jobs(url, **store_options)


@pytest.fixture
def manager() -> MemoryManager:
    return MemoryManager(Policy(), probe=FakeProbe("100MB"))


# -- 1. a Redis that evicts by itself -------------------------------------------------------

@pytest.mark.parametrize("own_redis", [("--maxmemory-policy", "allkeys-lru")], indirect=True)
def test_allkeys_policy_refused_at_connect(own_redis: RedisServer,
                                           manager: MemoryManager) -> None:
    with pytest.raises(RedisConfigError, match="maxmemory-policy allkeys-lru"):
        make_store(manager, own_redis.url)
    with redis.Redis(port=own_redis.port) as client:
        assert client.dbsize() == 0  # refused before anything was written


@pytest.mark.parametrize("own_redis", [("--maxmemory-policy", "allkeys-lfu")], indirect=True)
def test_allkeys_policy_allowed_when_the_store_says_so(own_redis: RedisServer,
                                                       manager: MemoryManager) -> None:
    store = make_store(manager, own_redis.url, allow_redis_eviction=True)
    store["a"] = {"status": "done"}
    assert store["a"]["status"] == "done"


@pytest.mark.parametrize("own_redis", [("--maxmemory-policy", "volatile-lru")], indirect=True)
def test_volatile_policy_accepted_and_no_key_has_a_ttl(own_redis: RedisServer,
                                                       manager: MemoryManager) -> None:
    from memguard import handle

    store = make_store(manager, own_redis.url)
    store["a"] = {"status": "running", "result": None}
    store["a"]["result"] = [1, 2]
    handle(store).pin("a")
    try:
        with redis.Redis(port=own_redis.port) as client:
            keys = client.keys("*")
            assert keys and all(client.ttl(key) == -1 for key in keys)
    finally:
        handle(store).unpin("a")


def test_policy_changed_while_unreachable_is_checked_again(own_redis: RedisServer,
                                                           manager: MemoryManager) -> None:
    store = make_store(manager, own_redis.url)
    store["a"] = {"status": "done"}
    own_redis.stop()
    own_redis.extra = ("--maxmemory-policy", "allkeys-random")
    with pytest.raises(RedisUnavailable):
        store["a"]
    own_redis.start()
    with pytest.raises(RedisConfigError, match="maxmemory-policy allkeys-random"):
        store["b"] = {"status": "done"}


# -- 5. a full Redis ------------------------------------------------------------------------

FULL = ("--maxmemory", "3mb", "--maxmemory-policy", "noeviction")


@pytest.mark.parametrize("own_redis", [FULL], indirect=True)
def test_full_redis_of_running_jobs_still_accepts_finishing_writes(
        own_redis: RedisServer, manager: MemoryManager) -> None:
    store = make_store(manager, own_redis.url)
    big = "x" * 100_000
    with pytest.raises(RedisFull):
        for i in range(200):
            store[f"j{i}"] = {"status": "running", "result": big}
    stored = list(store)
    assert len(stored) > 5
    with pytest.raises(RedisFull):  # a write that does not finish a job is refused
        store[stored[0]]["note"] = big
    with capture_evictions(manager) as events:
        for key in stored:  # every worker marks its job done: none is refused
            store[key].update(status="done", progress=100)
    # on a full Redis a finished job is what the emergency rule frees first, at once
    assert {event.cause for event in events} <= {Cause.EMERGENCY}
    assert sorted(list(store) + [event.key for event in events]) == sorted(stored)
    assert all(job["status"] == "done" for job in store.values())
    store["next"] = {"status": "running", "result": big}  # finished jobs make room for it
    assert "next" in store and len(store) < len(stored) + 1


@pytest.mark.parametrize("own_redis", [FULL], indirect=True)
def test_redis_full_frees_finished_jobs_at_once(own_redis: RedisServer,
                                                manager: MemoryManager) -> None:
    store = make_store(manager, own_redis.url)
    big = "x" * 100_000
    with capture_evictions(manager) as events:
        for i in range(100):  # ~10 MB into a 3 MB Redis, no pass ever run
            store[f"j{i}"] = {"status": "done", "result": big}
            if i % 10 == 0:
                store[f"r{i}"] = {"status": "running", "result": None}
    assert "j99" in store and all(f"r{i}" in store for i in range(0, 100, 10))
    assert events and {event.cause for event in events} == {Cause.EMERGENCY}
    assert all(event.key.startswith("j") for event in events)


# -- 6. an operation whose reply was lost ---------------------------------------------------

def test_pop_whose_reply_was_lost_returns_the_job_next_time(own_redis: RedisServer,
                                                            manager: MemoryManager) -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    @managed_store(name="jobs", manager=manager)
    class Jobs(RedisStore):
        pass

    client = redis.Redis(port=own_redis.port, socket_timeout=0.3, retry=Retry(NoBackoff(), 0))
    store = Jobs(client=client)
    store["a"] = {"status": "done", "result": {"text": "the only copy"}}
    assert store.pop("absent", None) is None  # the pop script is loaded: EVALSHA runs it
    own_redis.pause()
    try:
        with pytest.raises(RedisUnavailable, match=r"pop may have been applied.*'a'"):
            store.pop("a")
    finally:
        own_redis.resume()  # the pop sent before the freeze runs now: the job is taken
    with redis.Redis(port=own_redis.port) as other:
        deadline = time.monotonic() + 5
        while other.zscore("memguard:{jobs}:created", "a") is not None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert "a" not in store
    assert store.pop("a") == {"status": "done", "result": {"text": "the only copy"}}
    assert store.pop("a", None) is None  # once only
    store["b"] = {"status": "done"}
    assert store.pop("b") == {"status": "done"}
    with redis.Redis(port=own_redis.port) as other:  # the kept copy of "a" went with it
        assert other.keys("memguard:{jobs}:t:*") and len(other.keys("memguard:{jobs}:t:*")) == 1


# -- 7. a pass whose later batch fails -------------------------------------------------------

class StopsAfterFirstPassBatch(redis.Redis):
    """A real client that kills the real server right after the first pass batch answered
    (the fault lands between two batches of one pass, every time)."""

    server: RedisServer
    pass_sha = ""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        reply = super().execute_command(*args, **options)
        if args[0] == "EVALSHA" and args[1] == self.pass_sha:
            self.server.stop()
        return reply


def test_pass_failing_in_a_later_batch_reports_what_earlier_batches_evicted(
        own_redis: RedisServer, manager: MemoryManager,
        caplog: pytest.LogCaptureFixture) -> None:
    from memguard import handle
    from memguard.redis._core import PASS_BATCH

    @managed_store(name="jobs", manager=manager, max_age=0.2)
    class Jobs(RedisStore):
        pass

    client = StopsAfterFirstPassBatch(port=own_redis.port, socket_timeout=1)
    client.server = own_redis
    store = Jobs(client=client)
    for i in range(PASS_BATCH * 2 + 100):
        store[f"j{i}"] = {"status": "done"}
    time.sleep(0.3)
    client.pass_sha = store._core.link.scripts.__dict__["pass"].sha
    with capture_evictions(manager) as events:
        report = handle(store).cleanup()
    assert len(events) == PASS_BATCH and report.evicted == PASS_BATCH
    assert handle(store).stats().evictions == {"age": PASS_BATCH}
    assert "failed after evicting 500 job(s)" in caplog.text


# -- 8. a frozen Redis ----------------------------------------------------------------------

def test_frozen_redis_never_stalls_the_sampler_or_stats(own_redis: RedisServer) -> None:
    from memguard import handle

    policy = Policy.from_toml("[memory]\nsample_interval = 0.1\ncheck_interval = 0.1\n",
                              environ={})
    manager = MemoryManager(policy, probe=FakeProbe("100MB"))

    @managed_store(name="jobs", manager=manager, max_jobs=10)
    class Jobs(RedisStore):
        pass

    store = Jobs(own_redis.url)  # a 5 s socket timeout, as built from a URL
    store["a"] = {"status": "done"}
    monitor = manager.setup_memory_monitoring()
    try:
        time.sleep(0.5)
        own_redis.pause()
        before = monitor.ticks
        start = time.monotonic()
        stats = handle(store).stats()
        took = time.monotonic() - start
        assert took < 1.5 and stats.reachable is False and stats.jobs == 1, (took, stats)
        start = time.monotonic()
        stats = handle(store).stats()  # asked again: joins the call in flight, same bound
        assert time.monotonic() - start < 1.5 and stats.reachable is False
        time.sleep(4.0)
        ticks = monitor.ticks - before
        # 4 s at 0.1 s: ~40 samples; the passes over the frozen Redis cost at most one
        # wait bound (1 s) between them
        assert ticks >= 20, ticks
    finally:
        own_redis.resume()
        monitor.stop()
    assert handle(store).cleanup() is not None
    assert handle(store).stats().reachable is True  # joins the call the freeze held, if any


# -- 9. never more than max_jobs finished jobs ----------------------------------------------

def test_jobs_that_finish_are_bounded_at_once(redis_url: str, manager: MemoryManager) -> None:
    store = make_store(manager, redis_url, max_jobs=10)
    for i in range(10):
        store[f"r{i}"] = {"status": "running", "result": None}
    for i in range(10):  # each insert evicts the finished job before it: one stays, over
        store[f"d{i}"] = {"status": "done", "result": i}
    assert len(store) == 11

    def finished() -> int:
        return sum(job["status"] != "running" for job in store.values())

    with capture_evictions(manager) as events:
        for i in range(10):  # the running jobs finish: the first write brings it back to 10
            store[f"r{i}"].update(status="done", result=i)
            assert len(store) == 10 and finished() == i + 1
    assert [(event.key, event.cause) for event in events] == [("d9", Cause.COUNT)]


@pytest.mark.parametrize("own_redis", [FULL], indirect=True)
def test_redis_full_frees_finished_jobs_of_every_store_on_that_redis(
        own_redis: RedisServer, manager: MemoryManager) -> None:
    @managed_store(name="results", manager=manager)
    class Results(RedisStore):
        pass

    results = Results(own_redis.url)
    running = make_store(manager, own_redis.url)  # store "jobs": running jobs only
    big = "x" * 100_000
    for i in range(20):  # ~2 MB of finished results in the other store
        results[f"r{i}"] = {"status": "done", "result": big}
    with capture_evictions(manager) as events:
        for i in range(8):  # this store has nothing to free: the other one gives way
            running[f"j{i}"] = {"status": "running", "result": big}
    assert len(running) == 8 and len(results) < 20
    assert events and {(e.store, e.cause) for e in events} == {("results", Cause.EMERGENCY)}
