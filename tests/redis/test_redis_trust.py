"""Issue 23: Redis stores that stay trustworthy when Redis misbehaves (DESIGN section 8,
"Trust"). Real redis-server processes started by the tests; each test is one fault seen from
the user's side."""

from __future__ import annotations

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
