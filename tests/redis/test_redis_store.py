"""RedisStore against a real redis-server: the mapping protocol, live jobs, the rules."""

from __future__ import annotations

import json
import pickle
import time
from typing import Any

import hypothesis.strategies as st
import pytest
import redis
from hypothesis import HealthCheck, given, settings

from memguard import (
    Cause,
    MemoryManager,
    Policy,
    PolicyError,
    StoreDefinitionError,
    handle,
    managed_store,
    touches,
)
from memguard.redis import (
    RedisConfigError,
    RedisHandle,
    RedisJob,
    RedisStore,
    RedisStoreStats,
)
from memguard.testing import capture_evictions


@pytest.fixture
def manager() -> MemoryManager:
    return MemoryManager(Policy())


def store_class(manager: MemoryManager, **options: Any) -> type[RedisStore]:
    @managed_store(name=options.pop("name", "jobs"), manager=manager, **options)
    class Jobs(RedisStore):
        pass

    return Jobs


def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# -- the mapping protocol -------------------------------------------------------------------

def test_mapping_protocol(redis_url: str, manager: MemoryManager) -> None:
    store = store_class(manager)(redis_url)
    assert len(store) == 0 and list(store) == [] and not store
    store["a"] = {"status": "done", "n": 1}
    store["b"] = {"status": "done", "n": 2}
    store.update({"c": {"n": 3}}, d={"n": 4})
    assert list(store) == ["a", "b", "c", "d"]  # creation order
    assert len(store) == 4 and "a" in store and "z" not in store and 1 not in store
    assert store["a"] == {"status": "done", "n": 1}
    assert store.get("z") is None and store.get("z", 5) == 5
    assert dict(store.items()) == {"a": {"status": "done", "n": 1},
                                   "b": {"status": "done", "n": 2}, "c": {"n": 3}, "d": {"n": 4}}
    assert sorted(job["n"] for job in store.values()) == [1, 2, 3, 4]
    assert set(store.keys()) == {"a", "b", "c", "d"}
    assert store == {"a": {"status": "done", "n": 1}, "b": {"status": "done", "n": 2},
                     "c": {"n": 3}, "d": {"n": 4}}
    del store["a"]
    with pytest.raises(KeyError):
        del store["a"]
    with pytest.raises(KeyError):
        store["a"]
    assert store.pop("b") == {"status": "done", "n": 2} and type(store.pop("c")) is dict
    assert store.pop("b", None) is None
    with pytest.raises(KeyError):
        store.pop("b")
    assert store.setdefault("d", {"n": 9}) == {"n": 4}
    assert store.setdefault("e", {"n": 5}) == {"n": 5} and store["e"] == {"n": 5}
    assert store.popitem() == ("e", {"n": 5})  # the newest, as dict does
    store.clear()
    assert len(store) == 0
    with pytest.raises(KeyError):
        store.popitem()


def test_replacing_a_job_keeps_its_age_and_drops_old_fields(redis_url: str,
                                                            manager: MemoryManager) -> None:
    store = store_class(manager)(redis_url)
    store["a"] = {"status": "running", "result": "x" * 50, "extra": 1}
    created = store.client.zscore("memguard:{jobs}:created", "a")
    store["a"] = {"status": "done"}
    assert store["a"] == {"status": "done"}
    assert store.client.zscore("memguard:{jobs}:created", "a") == created
    assert not store.client.exists("memguard:{jobs}:r:a")
    assert handle(store).stats().bytes == len("status") + len('"done"')


def test_bad_input_is_refused_clearly(redis_url: str, manager: MemoryManager) -> None:
    store = store_class(manager)(redis_url)
    with pytest.raises(TypeError, match="job ids of a Redis store are strings"):
        store[1] = {}  # type: ignore[index]
    with pytest.raises(KeyError):  # reading another kind of key: not there, as in a dict
        store[1]  # type: ignore[index]
    assert store.get(1) is None and store.pop(1, "d") == "d" and 1 not in store  # type: ignore
    with pytest.raises(TypeError, match="mappings of field -> value; got list"):
        store["a"] = [1, 2]  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"field 'when'.*serializer 'json'.*pickle"):
        store["a"] = {"when": object()}
    assert "a" not in store  # nothing half-written
    with pytest.raises(RedisConfigError, match="serializer"):
        RedisStore(redis_url, serializer="yaml")
    with pytest.raises(RedisConfigError, match="REDIS_URL"):
        RedisStore()
    with pytest.raises(StoreDefinitionError, match="size= does not apply"):
        store_class(manager, size=len)
    with pytest.raises(StoreDefinitionError, match="mapping="):
        managed_store(mapping="jobs")(RedisStore)


def test_url_from_environment(redis_url: str, manager: MemoryManager,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    store = store_class(manager)()
    store["a"] = {"n": 1}
    assert store.client.exists("memguard:{jobs}:j:a")


def test_pickle_serializer_and_client_argument(redis_url: str, manager: MemoryManager) -> None:
    client = redis.Redis.from_url(redis_url)
    store = store_class(manager)(client=client, prefix="app", serializer="pickle",
                                 unsafe_pickle=True)
    when = {1, 2, 3}
    store["a"] = {"status": "running", "result": when}
    assert store["a"]["result"] == when
    assert pickle.loads(client.hget("app:{jobs}:r:a", "result")) == when  # type: ignore[arg-type]
    assert handle(store).stats().active == 1  # the status is compared inside Redis, pickled


# -- live jobs ------------------------------------------------------------------------------

def test_live_job_writes_go_to_redis(redis_url: str, manager: MemoryManager) -> None:
    store = store_class(manager)(redis_url)
    other = store_class(manager)(redis_url)  # another worker's view of the same store
    store["a"] = {"status": "running", "result": None}
    job = store.get("a")
    assert isinstance(job, RedisJob) and isinstance(job, dict)
    job["result"] = {"text": "hello"}
    job["status"] = "done"
    assert other["a"] == {"status": "done", "result": {"text": "hello"}}
    assert json.loads(json.dumps(other["a"])) == {"status": "done", "result": {"text": "hello"}}
    assert {**other["a"]} == dict(other["a"]) == {"status": "done", "result": {"text": "hello"}}
    del job["status"]
    assert "status" not in other["a"]
    job.update(progress=3)
    assert other["a"]["progress"] == 3 and other["a"].refresh() == job


def test_reading_small_fields_never_transfers_release_fields(redis_url: str,
                                                            manager: MemoryManager) -> None:
    store = store_class(manager, release=("result", "files"))(redis_url)
    big = "x" * 100_000
    store["a"] = {"status": "done", "result": big, "files": [big], "note": "n"}
    client = store.client
    assert client.hstrlen("memguard:{jobs}:j:a", "note") == 3
    assert len(client.hget("memguard:{jobs}:j:a", "result")) == 2  # a marker, not the value
    job = store["a"]
    assert dict.__getitem__(job, "result") is None  # the snapshot holds no result
    assert job["note"] == "n" and job["result"] == big and job["files"] == [big]
    assert list(job) == ["status", "result", "files", "note"]  # field order kept


def test_write_to_an_evicted_job_does_not_bring_it_back(redis_url: str,
                                                        manager: MemoryManager) -> None:
    store = store_class(manager)(redis_url)
    store["a"] = {"status": "running", "result": None}
    job = store["a"]
    store["a"]["result"] = "R"
    assert handle(store).evict("a") is not None
    job["status"] = "done"
    job["result"] = "late"
    assert "a" not in store and len(store) == 0
    assert store.client.keys("memguard:{jobs}:[jr]:*") == []
    assert job["result"] is None  # released, as an in-process store releases it


# -- rules ----------------------------------------------------------------------------------

def test_count_bound_at_insert_in_lru_order_sparing_active_jobs(redis_url: str,
                                                                manager: MemoryManager) -> None:
    store = store_class(manager, max_jobs=3)(redis_url)
    with capture_evictions(manager) as events:
        store["run"] = {"status": "running"}
        store["a"] = {"status": "done"}
        store["b"] = {"status": "done"}
        store["a"]  # a read: b is now the least recently used evictable job
        store["c"] = {"status": "done"}
        assert [(e.key, e.cause) for e in events] == [("b", Cause.COUNT)]
        store["d"] = {"status": "done"}
    assert sorted(store) == ["c", "d", "run"] and len(store) == 3
    assert [e.key for e in events] == ["b", "a"]
    assert all(e.size and e.store == "jobs" for e in events)


def test_orders_oldest_and_largest(redis_url: str, manager: MemoryManager) -> None:
    oldest = store_class(manager, name="old", max_jobs=2, order="oldest")(redis_url)
    oldest["a"] = {"n": 1}
    oldest["b"] = {"n": 2}
    oldest["a"]  # reads do not change the oldest order
    oldest["c"] = {"n": 3}
    assert sorted(oldest) == ["b", "c"]
    largest = store_class(manager, name="big", max_jobs=2, order="largest")(redis_url)
    largest["a"] = {"result": "x" * 10}
    largest["b"] = {"result": "x" * 1000}
    largest["c"] = {"result": "x" * 100}
    assert sorted(largest) == ["a", "c"]


def test_byte_bound(redis_url: str, manager: MemoryManager) -> None:
    store = store_class(manager, max_bytes=2000)(redis_url)
    for i in range(5):
        store[f"j{i}"] = {"status": "done", "result": "x" * 600}
    assert handle(store).stats().bytes <= 2000
    assert sorted(store) == ["j2", "j3", "j4"]


def test_active_jobs_and_pins_are_never_evicted(redis_url: str, manager: MemoryManager) -> None:
    store = store_class(manager, max_jobs=1)(redis_url)
    store_handle = handle(store)
    store["p"] = {"status": "done"}
    store_handle.pin("p")
    with store_handle.in_use("p"):  # pins nest
        store["r"] = {"status": "running"}
        store["q"] = {"status": "queued"}
    assert sorted(store) == ["p", "q", "r"]
    stats = store_handle.stats()
    assert (stats.jobs, stats.active, stats.pinned) == (3, 2, 1)
    store["q"]["status"] = "done"  # finished: evictable at the next pass
    store_handle.unpin("p")
    store_handle.cleanup()
    assert sorted(store) == ["r"]


def test_callable_active_is_evaluated_by_the_writer(redis_url: str,
                                                    manager: MemoryManager) -> None:
    store = store_class(manager, max_jobs=1, active=lambda job: not job.get("done"))(redis_url)
    store["a"] = {"done": False}
    store["b"] = {"done": False}
    assert sorted(store) == ["a", "b"]
    store["a"]["done"] = True
    store["c"] = {"done": True}
    assert sorted(store) == ["b", "c"]


def test_pins_lapse_when_their_holder_stops_renewing(redis_url: str,
                                                     manager: MemoryManager) -> None:
    store = store_class(manager, max_jobs=1)(redis_url)
    crashed = handle(store)
    assert isinstance(crashed, RedisHandle)
    crashed.pin_lease = 0.5
    store["a"] = {"status": "done"}
    crashed.core.pin(["a"], "a-worker-that-died", 0.5)  # pinned, never renewed
    store["b"] = {"status": "done"}
    assert "a" in store
    wait_until(lambda: crashed.stats().pinned == 0)
    crashed.cleanup()
    assert sorted(store) == ["b"]


def test_held_pins_are_renewed(redis_url: str, manager: MemoryManager) -> None:
    store = store_class(manager, max_jobs=1)(redis_url)
    store_handle = handle(store)
    assert isinstance(store_handle, RedisHandle)
    store_handle.pin_lease = 1.5  # renewed every 0.5 s
    store["a"] = {"status": "done"}
    store_handle.pin("a")
    deadline = time.monotonic() + 4.0  # past two leases: it held by renewals
    while time.monotonic() < deadline:
        store_handle.cleanup()
        assert store_handle.stats().pinned == 1
        time.sleep(0.1)
    store["b"] = {"status": "done"}
    assert "a" in store
    store_handle.unpin("a")
    store_handle.cleanup()
    assert sorted(store) == ["b"]


@pytest.mark.parametrize(("option", "cause"), [("max_age", Cause.AGE),
                                               ("max_idle", Cause.IDLE)])
def test_age_and_idle_expire_at_a_pass(redis_url: str, manager: MemoryManager, option: str,
                                       cause: Cause) -> None:
    store = store_class(manager, **{option: "1s"})(redis_url)
    store["done"] = {"status": "done"}
    store["failed"] = {"status": "failed"}
    store["run"] = {"status": "running"}
    store_handle = handle(store)
    with capture_evictions(manager) as events:
        deadline = time.monotonic() + 20
        while len(store) > 1 and time.monotonic() < deadline:
            store_handle.cleanup()
            time.sleep(0.05)
    assert sorted(store) == ["run"]
    assert sorted((e.key, e.cause) for e in events) == [("done", cause), ("failed", cause)]


def test_policy_precedence_and_store_sections(redis_url: str) -> None:
    policy = Policy.from_toml('[defaults]\nmax_jobs = 10\n[stores.diagram]\nmax_jobs = 2\n',
                              environ={})
    manager = MemoryManager(policy)
    store = store_class(manager, name="diagram", max_jobs=5)(redis_url)
    assert handle(store).policy.max_jobs == 2
    for i in range(4):
        store[f"j{i}"] = {"status": "done"}
    assert len(store) == 2
    manager.load_policy(Policy.from_toml("[stores.diagram]\nmax_jobs = 3\n", environ={}))
    for i in range(4, 8):
        store[f"j{i}"] = {"status": "done"}
    assert len(store) == 3


def test_handle_in_manager_and_stats(redis_url: str, manager: MemoryManager) -> None:
    store = store_class(manager, name="diagram", max_jobs=5)(redis_url)
    store["a"] = {"status": "running", "result": "x" * 10}
    store_handle = handle(store)
    assert manager.stores["diagram"] == (store_handle,)
    assert manager.run_cleanup().evicted == 0
    assert len(store_handle.index) == 1 and store_handle.index.total_bytes > 0
    stats = store_handle.stats()
    assert isinstance(stats, RedisStoreStats) and stats.reachable and stats.redis_used_memory
    data = stats.to_dict()
    assert data["backend"] == "redis" and data["jobs"] == 1 and data["active"] == 1
    memory = manager.get_memory_stats().to_dict()
    assert [s["name"] for s in memory["stores"]] == ["diagram"]
    manager.setup_job_store_cleanup(store, "diagram", max_jobs=1)  # a managed store: adds rules
    assert store_handle.policy.max_jobs == 1


def test_setup_job_store_cleanup_refuses_an_undecorated_redis_store(
        redis_url: str, manager: MemoryManager) -> None:
    class Jobs(RedisStore):  # no @managed_store: a plain shared mapping
        pass

    store = Jobs(redis_url)
    with pytest.raises(StoreDefinitionError,
                       match=r"setup_job_store_cleanup\(.*Jobs instance, 'diagram'\).*"
                             r"@managed_store\(name='diagram', max_jobs=2\) on class .*Jobs"):
        manager.setup_job_store_cleanup(store, "diagram", max_jobs=2)
    assert manager.stores == {} and manager.plain_handle(store) is None  # nothing adopted
    assert store._memguard is None
    with pytest.raises(TypeError, match="not a managed store"):
        handle(store)
    for i in range(4):  # still a plain shared mapping: unbounded, no pass touches it
        store[f"j{i}"] = {"status": "done"}
    assert manager.run_cleanup().evicted == 0 and len(store) == 4


def test_worker_emergency_budget_never_evicts_redis_jobs(redis_url: str,
                                                        manager: MemoryManager) -> None:
    store = store_class(manager)(redis_url)
    for i in range(5):
        store[f"j{i}"] = {"status": "done", "result": "x" * 1000}
    assert manager.evict_bytes(10**9) == []
    assert len(store) == 5


def test_redis_evictions_do_not_cue_a_worker_reclaim(redis_url: str,
                                                     manager: MemoryManager) -> None:
    from memguard.monitor.tick import TRIM_AFTER

    store = store_class(manager, max_jobs=1)(redis_url)
    big = "x" * (1 << 20)
    with capture_evictions(manager) as events:
        for i in range(TRIM_AFTER // len(big) + 2):  # each insert evicts the previous job
            store[f"j{i}"] = {"status": "done", "result": big}
        handle(store).evict(f"j{TRIM_AFTER // len(big) + 1}")
    # Counted and told as evictions, with their sizes: more than the reclaim cue...
    assert sum(event.size or 0 for event in events) > TRIM_AFTER
    assert handle(store).evictions == {"count": len(events) - 1, "explicit": 1}
    assert handle(store).stats().evictions == {"count": len(events) - 1, "explicit": 1}
    # ...but Redis' memory was freed, not the worker's: nothing toward a worker reclaim.
    assert manager.evicted_bytes == 0

    @managed_store(name="local", manager=manager, max_jobs=1)
    class Local(dict):  # type: ignore[type-arg]
        pass

    local = Local()
    local["a"] = {"status": "done", "result": big}
    local["b"] = {"status": "done", "result": big}  # evicts "a": this worker's memory
    assert manager.evicted_bytes >= len(big)


def test_redis_memory_drives_the_emergency_rule(redis_url: str, manager: MemoryManager) -> None:
    store = store_class(manager)(redis_url)
    for i in range(20):
        store[f"j{i}"] = {"status": "done", "result": "x" * 50_000}
    store["run"] = {"status": "running", "result": "x" * 50_000}
    store_handle = handle(store)
    assert isinstance(store_handle, RedisHandle)
    used = int(store.client.info("memory")["used_memory"])
    store_handle.redis_limit = int(used / 0.95)  # Redis is at 95% of its budget
    with capture_evictions(manager) as events:
        store_handle.cleanup()
    assert events and {e.cause for e in events} == {Cause.EMERGENCY}
    assert "run" in store and len(store) < 21
    assert int(store.client.info("memory")["used_memory"]) < 0.9 * store_handle.redis_limit


def test_touches_batches_reads_into_one_recency_update(redis_url: str,
                                                      manager: MemoryManager) -> None:
    @managed_store(name="jobs", manager=manager, max_jobs=2)
    class Jobs(RedisStore):
        @touches
        def status_of(self, job_id: str) -> Any:
            job = self.peek(job_id)  # no recency update of its own
            return None if job is None else job["status"]

    store = Jobs(redis_url)
    store["a"] = {"status": "done"}
    store["b"] = {"status": "done"}
    assert store.status_of("a") == "done"
    assert handle(store).recency() == ["a", "b"]  # batched, not sent yet
    store["c"] = {"status": "done"}  # the next operation sends it first: b is the LRU job
    assert sorted(store) == ["a", "c"]
    assert store.status_of("zz") is None  # an unknown id is ignored
    assert handle(store).recency() == ["a", "c"]


def test_redis_section_of_the_policy(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # [redis] url comes first
    policy = Policy.from_toml(f'[redis]\nurl = "{redis_url}"\nlimit = "1KB"\n', environ={})
    assert policy.redis == {"url": redis_url, "limit": 1024}
    assert policy.provenance["redis.limit"] == "<string>:3"
    manager = MemoryManager(policy)
    store = store_class(manager)(None)
    store["a"] = {"status": "done", "result": "x" * 1000}
    store_handle = handle(store)
    stats = store_handle.stats()
    assert stats.redis_limit == 1024 and stats.reachable
    with capture_evictions(manager) as events:
        store_handle.cleanup()  # Redis uses far more than 1KB: the emergency rule runs
    assert [(e.key, e.cause) for e in events] == [("a", Cause.EMERGENCY)]
    with pytest.raises(PolicyError, match=r"<string>:2: redis.url: expected a Redis URL"):
        Policy.from_toml('[redis]\nurl = "http://x"\n', environ={})
    with pytest.raises(PolicyError, match=r'unknown key "maxmemory" in \[redis\]; allowed: url'):
        Policy.from_toml("[redis]\nmaxmemory = 5\n", environ={})


def test_redis_older_than_7_is_refused_clearly() -> None:
    from memguard.errors import RedisStoreError
    from memguard.redis.checks import require_redis_7

    require_redis_7("7.0.15", "here")
    require_redis_7("8.2.1", "here")
    require_redis_7("", "here")  # not said: not assumed
    with pytest.raises(RedisStoreError, match=r"Redis at here runs 6\.2\.14; .* needs Redis >= 7"):
        require_redis_7("6.2.14", "here")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job=st.dictionaries(st.sampled_from(["result", "status"]) | st.text(max_size=10), JSON,
                           max_size=5),
       serializer=st.sampled_from(["json", "pickle"]))
def test_any_job_round_trips_with_exact_sizes(redis_url: str, job: dict[str, Any],
                                             serializer: str) -> None:
    manager = MemoryManager(Policy())
    signing = {"pickle_key": b"k" * 32} if serializer == "pickle" else {}
    store = store_class(manager, name=f"rt_{serializer}")(redis_url, serializer=serializer,
                                                          **signing)
    store.clear()
    store["a"] = job
    assert store["a"] == job and store.peek("a").copy() == job
    live = store["a"]
    for field, value in job.items():  # rewrite each field through the live job
        live[field] = value
    assert store.peek("a") == job
    for field in job:  # then delete each field through it: nothing left to count
        del live[field]
    assert store["a"] == {} and handle(store).stats().bytes == 0
    store["a"] = job
    assert store.pop("a") == job
    assert handle(store).stats().bytes == 0 and len(store) == 0
