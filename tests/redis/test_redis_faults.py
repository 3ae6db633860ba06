"""Faults of a real Redis: down, restarted, frozen (timeouts), full. Each fails the operation
that needed Redis with a MemguardError, never answers as an empty store, leaves no job
half-written, and the manager and its monitor keep running."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from memguard import MemguardError, MemoryManager, Policy, handle, managed_store
from memguard.redis import (
    RedisFull,
    RedisHandle,
    RedisStore,
    RedisStoreStats,
    RedisUnavailable,
)
from memguard.testing import FakeProbe
from tests.redis.conftest import RedisServer


def make_store(manager: MemoryManager, client: Any, **options: Any) -> RedisStore:
    @managed_store(name="jobs", manager=manager, **options)
    class Jobs(RedisStore):
        pass

    return Jobs(client=client)


def client_of(server: RedisServer, timeout: float = 2.0) -> redis.Redis:
    """A client that fails at once (no retries), as a store built from a URL does."""
    return redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=timeout,
                       socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))


def test_redis_down_then_back(own_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    manager = MemoryManager(Policy(), probe=FakeProbe("100MB"))

    @managed_store(name="jobs", manager=manager, max_jobs=5)
    class Jobs(RedisStore):
        pass

    store = Jobs(own_redis.url)  # the client a store builds from a URL
    store["a"] = {"status": "running", "result": None}
    job = store["a"]
    store_handle = handle(store)
    assert store_handle.stats().jobs == 1
    monitor = manager.setup_memory_monitoring(interval=0.05)
    try:
        own_redis.stop()
        operations = [
            lambda: store["a"], lambda: store.get("a"), lambda: len(store),
            lambda: list(store), lambda: "a" in store, lambda: store.__setitem__("b", {}),
            lambda: job.__setitem__("status", "done"), lambda: job["result"],
            lambda: store.pop("a"), lambda: store_handle.pin("a"),
        ]
        for operation in operations:
            with pytest.raises(RedisUnavailable, match=f"127.0.0.1:{own_redis.port}"):
                operation()
        assert issubclass(RedisUnavailable, MemguardError)
        stats = store_handle.stats()  # never raises: reports the store unreachable
        assert isinstance(stats, RedisStoreStats)
        assert not stats.reachable and "unavailable" in (stats.error or "")
        assert stats.jobs == 1  # the last figures read, not an empty store
        memory = manager.get_memory_stats().to_dict()
        assert memory["stores"][0]["reachable"] is False
        with caplog.at_level(logging.ERROR, logger="memguard"):
            assert manager.run_cleanup().evicted == 0  # the failed pass is isolated
        assert "pass over store jobs failed" in caplog.text
        ticks = monitor.ticks
        deadline = time.monotonic() + 20
        while monitor.ticks < ticks + 3:  # the monitor keeps ticking while Redis is away
            assert time.monotonic() < deadline and monitor.running
            time.sleep(0.05)

        own_redis.start()  # a restart without persistence: every key is gone
        deadline = time.monotonic() + 20
        while True:  # the client reconnects at the next command
            try:
                store["b"] = {"status": "done"}
                break
            except RedisUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert list(store) == ["b"] and store["b"] == {"status": "done"}  # scripts reloaded
        assert store_handle.stats().reachable
        job["status"] = "done"  # its job went with the restart: the write does not revive it
        assert "a" not in store
        assert monitor.running
    finally:
        manager.stop()


def test_frozen_redis_times_out(own_redis: RedisServer) -> None:
    manager = MemoryManager(Policy())
    store = make_store(manager, client_of(own_redis, timeout=0.5))
    store["a"] = {"status": "done"}
    own_redis.pause()
    try:
        with pytest.raises(RedisUnavailable, match="during read"):
            store.get("a")
        assert not handle(store).stats().reachable
    finally:
        own_redis.resume()
    deadline = time.monotonic() + 20
    while True:
        try:
            assert store["a"] == {"status": "done"}
            break
        except RedisUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.05)


@pytest.mark.parametrize("own_redis", [("--maxmemory", "3mb", "--maxmemory-policy",
                                        "noeviction")], indirect=True)
def test_full_redis_refuses_whole_writes_and_still_evicts(own_redis: RedisServer) -> None:
    manager = MemoryManager(Policy())
    client = client_of(own_redis)
    store = make_store(manager, client)
    big = "x" * 200_000
    written = []
    with pytest.raises(RedisFull, match=r"full.*nothing was written") as raised:
        for i in range(100):  # running jobs: nothing the emergency rule may free
            store[f"j{i}"] = {"status": "running", "result": big, "note": "n"}
            written.append(f"j{i}")
    assert isinstance(raised.value, MemguardError) and isinstance(raised.value, MemoryError)
    refused = f"j{len(written)}"
    assert refused not in store  # not half-written: no key of it at all
    assert not client.exists(f"memguard:{{jobs}}:j:{refused}", f"memguard:{{jobs}}:r:{refused}")
    assert list(store) == written
    assert handle(store).stats().bytes == sum(
        len("status") + len('"running"') + 2 * len("result") + 2 + len(big) + 2 + len("note") + 3
        for _ in written)
    assert store[written[0]]["result"] == big  # reads work on a full Redis
    assert handle(store).evict(written[0]) is not None  # so do evictions and deletes
    del store[written[1]]
    store[refused] = {"status": "done", "result": big, "note": "n"}  # room again
    assert refused in store


class CountingRedis(redis.Redis):
    """A real redis-py client that counts the commands it sends (scripts, INFO)."""

    sent = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent += 1
        return super().execute_command(*args, **options)


def test_stats_of_an_unreachable_redis_are_cheap_after_the_first_failure(
        own_redis: RedisServer) -> None:
    manager = MemoryManager(Policy())
    client = CountingRedis(host="127.0.0.1", port=own_redis.port, socket_timeout=0.5,
                           socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    store = make_store(manager, client)
    store["a"] = {"status": "running"}
    store_handle = handle(store)
    assert isinstance(store_handle, RedisHandle)
    store_handle.unreachable_retry = 3600.0  # the window cannot lapse during the test
    assert store_handle.stats().jobs == 1
    own_redis.pause()  # SIGSTOP: every command now waits for its timeout
    try:
        first = store_handle.stats()  # this one asks Redis, and waits for the timeout
        assert not first.reachable and "unavailable during stats" in (first.error or "")
        sent = client.sent
        for _ in range(20):  # what /memory, /metrics and the monitor call, again and again
            stats = store_handle.stats()
            assert not stats.reachable and stats.jobs == 1 and stats.active == 1
            assert "unavailable during stats" in (stats.error or "")
            assert "tried again 3600 s after a failure" in (stats.error or "")
        memory = manager.get_memory_stats().to_dict()  # as /memory builds it
        assert memory["stores"][0]["reachable"] is False
        assert client.sent == sent  # not one command sent to the frozen server
        with pytest.raises(RedisUnavailable, match="during read"):
            store.get("a")  # operations still try, and fail clearly
        assert client.sent > sent
        sent = client.sent
        store_handle.unreachable_retry = 0.0  # the window is over: stats ask Redis again
        assert not store_handle.stats().reachable and client.sent > sent
        store_handle.unreachable_retry = 3600.0
        # A failed operation opens the window too: stats then send nothing either.
        with pytest.raises(RedisUnavailable, match="during lookup"):
            _ = "a" in store
        sent = client.sent
        stats = store_handle.stats()
        assert not stats.reachable and "during lookup" in (stats.error or "")
        assert client.sent == sent
    finally:
        own_redis.resume()
    deadline = time.monotonic() + 20
    while True:  # a store operation that gets an answer ends the window at once
        try:
            assert store["a"] == {"status": "running"}
            break
        except RedisUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    stats = store_handle.stats()
    assert stats.reachable and stats.error is None and stats.jobs == 1
