"""Issue 23, item 11: Redis stores on a real 3-master Redis Cluster started by the tests
(`redis-server --cluster-enabled yes` x3, `redis-cli --cluster create`): the mapping
protocol, bounds, passes, the emergency rule reading the memory of the node that holds the
store's slot, and SCRIPT FLUSH on every node (NOSCRIPT: loaded again, retried)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from memguard import Cause, MemoryManager, Policy, handle, managed_store
from memguard.redis import RedisStore
from memguard.testing import capture_evictions
from tests.redis.cluster import RedisCluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    started = RedisCluster()
    try:
        started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture
def client(cluster: RedisCluster) -> Iterator[redis.RedisCluster]:
    cluster.flush()
    found = cluster.client()
    yield found
    found.close()


def store_on(client: Any, **options: Any) -> Any:
    manager = MemoryManager(Policy())

    @managed_store(name=options.pop("name", "jobs"), manager=manager, **options)
    class Jobs(RedisStore):
        pass

    return Jobs(client=client)


def flush_scripts(cluster: RedisCluster) -> None:
    for port in cluster.ports:
        with redis.Redis(port=port) as node:
            node.script_flush()


def test_mapping_protocol_on_a_cluster(cluster: RedisCluster, client: Any) -> None:
    store = store_on(client)
    assert len(store) == 0 and list(store) == [] and not store
    store["a"] = {"status": "done", "n": 1}
    store["b"] = {"status": "done", "n": 2}
    store.update({"c": {"n": 3}}, d={"n": 4})
    flush_scripts(cluster)  # every node forgets every script: each call loads it again
    assert list(store) == ["a", "b", "c", "d"]
    assert len(store) == 4 and "a" in store and "z" not in store
    assert store["a"] == {"status": "done", "n": 1} and store.get("z") is None
    assert dict(store.items()) == {"a": {"status": "done", "n": 1},
                                   "b": {"status": "done", "n": 2}, "c": {"n": 3}, "d": {"n": 4}}
    assert sorted(job["n"] for job in store.values()) == [1, 2, 3, 4]
    flush_scripts(cluster)
    del store["a"]
    with pytest.raises(KeyError):
        store["a"]
    assert store.pop("b") == {"status": "done", "n": 2}
    assert store.setdefault("d", {"n": 9}) == {"n": 4}
    assert store.setdefault("e", {"n": 5}) == {"n": 5}
    assert store.popitem() == ("e", {"n": 5})
    job = store["d"]
    flush_scripts(cluster)
    job.update(status="done", result=[1])
    assert store["d"] == {"n": 4, "status": "done", "result": [1]}
    store.clear()
    assert len(store) == 0


def test_bounds_and_passes_on_a_cluster(cluster: RedisCluster, client: Any) -> None:
    store = store_on(client, max_jobs=3, max_age=0.3)
    with capture_evictions(handle(store).manager) as events:
        for i in range(5):
            store[f"j{i}"] = {"status": "done"}
        store["run"] = {"status": "running"}
        assert list(store) == ["j3", "j4", "run"]
        assert [(e.key, e.cause) for e in events] == [("j0", Cause.COUNT), ("j1", Cause.COUNT),
                                                      ("j2", Cause.COUNT)]
        time.sleep(0.4)
        flush_scripts(cluster)
        report = handle(store).cleanup()
    assert report.evicted == 2 and list(store) == ["run"]  # the running job stays
    assert handle(store).stats().active == 1


def test_emergency_reads_the_memory_of_the_node_holding_the_store(
        cluster: RedisCluster, client: Any) -> None:
    store = store_on(client, name="big")
    node = client.get_node_from_key("memguard:{big}:created")
    for i in range(40):
        store[f"j{i}"] = {"status": "done", "result": "x" * 100_000}
    store["run"] = {"status": "running", "result": "x" * 100_000}
    used = {port: redis.Redis(port=port).info("memory")["used_memory"] for port in cluster.ports}
    assert used[node.port] > max(v for p, v in used.items() if p != node.port) + 3_000_000
    stats = handle(store).stats()
    assert abs(stats.redis_used_memory - used[node.port]) < 500_000
    handle(store).redis_limit = used[node.port]  # at its limit: evict down to 80% of it
    flush_scripts(cluster)
    with capture_evictions(handle(store).manager) as events:
        handle(store).cleanup()
    assert events and {e.cause for e in events} == {Cause.EMERGENCY}
    assert "run" in store
    after = redis.Redis(port=node.port).info("memory")["used_memory"]
    assert after < used[node.port] - 0.15 * used[node.port]


def test_pins_and_max_running_on_a_cluster(cluster: RedisCluster, client: Any) -> None:
    store = store_on(client, max_running=0.3, max_jobs=2)
    store["stuck"] = {"status": "running"}
    store["kept"] = {"status": "running"}
    handle(store).pin("kept")
    try:
        time.sleep(0.4)
        flush_scripts(cluster)
        with capture_evictions(handle(store).manager) as events:
            handle(store).cleanup()
        assert [(e.key, e.cause) for e in events] == [("stuck", Cause.ABANDONED)]
        assert list(store) == ["kept"]
    finally:
        handle(store).unpin("kept")
