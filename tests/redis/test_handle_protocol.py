"""Every member of the `StoreHandle` protocol, run on both implementations: an in-process
store (`LocalHandle`) and a Redis store (`RedisHandle`) on a real redis-server.

Each test runs once per kind with the same steps and the same expected outcome, so a
member that works on one kind only (or differently) fails here. Sits in tests/redis/ for
the server fixtures of tests/redis/conftest.py.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

import pytest

from memguard import (
    Cause,
    CleanupReport,
    EvictionEvent,
    MemoryManager,
    Policy,
    StoreHandle,
    StorePolicy,
    StoreStats,
    handle,
    managed_store,
)
from memguard.eviction.rules import Pass
from memguard.redis import RedisHandle, RedisStore
from memguard.stores import LocalHandle
from memguard.stores.protocol import as_handle

KINDS = ("local", "redis")
NAME = "jobs"


class Kind:
    """One store of either kind, bounded to `max_jobs=3`, with its manager and handle."""

    def __init__(self, kind: str, manager: MemoryManager, redis_url: str) -> None:
        self.kind = kind
        self.manager = manager
        if kind == "local":
            @managed_store(name=NAME, max_jobs=3, manager=manager)
            class LocalJobs(dict):  # type: ignore[type-arg]
                pass

            self.store: Any = LocalJobs()
        else:
            @managed_store(name=NAME, max_jobs=3, manager=manager)
            class RedisJobs(RedisStore):
                pass

            self.store = RedisJobs(redis_url)
        self.handle: StoreHandle = handle(self.store)

    def put(self, *keys: str, status: str = "done") -> None:
        for key in keys:
            self.store[key] = {"status": status, "result": "x" * 100}

    def ids(self) -> set[str]:
        return set(self.store)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> Iterator[Kind]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    yield Kind(request.param, MemoryManager(Policy()), url)


def test_both_implement_the_protocol_and_neither_inherits_the_other(kind: Kind) -> None:
    assert isinstance(kind.handle, StoreHandle)  # the runtime_checkable protocol
    assert as_handle(kind.handle) is kind.handle
    assert handle(kind.handle) is kind.handle
    assert type(kind.handle) is (LocalHandle if kind.kind == "local" else RedisHandle)
    assert LocalHandle not in RedisHandle.__mro__ and RedisHandle not in LocalHandle.__mro__
    for attribute in typing.get_type_hints(StoreHandle):
        assert hasattr(kind.handle, attribute), attribute  # set on the instance


@pytest.mark.parametrize("cls", [LocalHandle, RedisHandle])
def test_each_implementation_defines_every_member_itself(cls: type) -> None:
    """A member left to the protocol's stub would answer None: each class (or its
    instances, for attributes) must provide all of them."""
    members = [name for name in vars(StoreHandle) if not name.startswith("_")]
    methods = [name for name in members if callable(vars(StoreHandle)[name])]
    attributes = list(typing.get_type_hints(StoreHandle))
    assert set(methods) >= {"touch", "pin", "unpin", "in_use", "stats", "cleanup", "evict",
                            "recency", "run_pass", "effective_policy", "apply_policy",
                            "declare"}
    assert set(attributes) == {"name", "policy", "policy_source", "index"}
    for name in methods:
        assert any(name in vars(base) for base in cls.__mro__[:cls.__mro__.index(StoreHandle)]), (
            f"{cls.__name__}.{name} is the protocol's stub")
    for name in attributes:
        assert name in vars(cls).get("__annotations__", {}), name  # declared by the class


def test_name_policy_and_policy_source(kind: Kind) -> None:
    h = kind.handle
    assert h.name == NAME
    assert isinstance(h.policy, StorePolicy) and h.policy.max_jobs == 3
    assert h.policy_source is kind.manager.policy


def test_touch_moves_a_job_to_the_back_of_the_recency_order(kind: Kind) -> None:
    kind.put("a", "b", "c")
    assert kind.handle.recency() == ["a", "b", "c"]
    kind.handle.touch("a")
    kind.handle.touch("unknown")  # ignored
    assert kind.handle.recency() == ["b", "c", "a"]
    kind.put("d")  # over max_jobs=3: the least recently used goes
    assert kind.ids() == {"a", "c", "d"}


def test_pin_and_unpin_keep_a_job_from_eviction(kind: Kind) -> None:
    h = kind.handle
    kind.put("a", "b", "c")
    h.pin("a")
    h.pin("a")  # pins nest
    assert h.stats().pinned == 1
    kind.put("d")
    assert kind.ids() == {"a", "c", "d"}  # a was least recent, and pinned
    h.unpin("a")
    kind.put("e")
    assert "a" in kind.ids()  # still pinned once
    h.unpin("a")
    h.unpin("a")  # no pin left: ignored
    assert h.stats().pinned == 0
    kind.put("f")
    assert "a" not in kind.ids()


def test_in_use_pins_for_a_with_block(kind: Kind) -> None:
    h = kind.handle
    kind.put("a", "b", "c")
    with h.in_use("a"):
        assert h.stats().pinned == 1
        kind.put("d")
        assert "a" in kind.ids()
    assert h.stats().pinned == 0
    kind.put("e")
    assert "a" not in kind.ids()


def test_stats_count_jobs_active_pins_bytes_and_evictions(kind: Kind) -> None:
    kind.put("a", "b", status="running")
    kind.put("c", "d")  # d is one too many: c, the least recent finished job, goes
    stats = kind.handle.stats()
    assert isinstance(stats, StoreStats) and stats.name == NAME
    assert (stats.jobs, stats.active, stats.pinned) == (3, 2, 0)
    assert stats.evictions == {"count": 1}
    assert stats.bytes > 0
    assert stats.to_dict()["jobs"] == 3


def test_cleanup_runs_a_pass_and_reports_it(kind: Kind) -> None:
    kind.put("a", "b", "c", "d", status="running")  # all active: the bound waits
    assert len(kind.ids()) == 4
    kind.store["a"]["status"] = "done"  # finished in place (written through in Redis)
    report = kind.handle.cleanup()
    assert isinstance(report, CleanupReport)
    assert report.evicted == 1 and report.by_cause == {"count": 1}
    assert kind.ids() == {"b", "c", "d"}
    assert kind.handle.cleanup().evicted == 0


def test_run_pass_returns_the_events(kind: Kind) -> None:
    kind.put("a", "b", "c", "d", status="running")
    kind.store["b"]["status"] = "done"
    events = kind.handle.run_pass(Pass(now=kind.manager.clock()))
    assert [(e.store, e.key, e.cause) for e in events] == [(NAME, "b", Cause.COUNT)]


def test_evict_removes_a_job_even_if_active(kind: Kind) -> None:
    kind.put("a", status="running")
    event = kind.handle.evict("a")
    assert isinstance(event, EvictionEvent)
    assert (event.store, event.key, event.cause) == (NAME, "a", Cause.EXPLICIT)
    assert kind.ids() == set()
    assert kind.handle.evict("a") is None
    assert kind.handle.stats().evictions == {"explicit": 1}


def test_effective_policy_and_apply_policy(kind: Kind) -> None:
    h = kind.handle
    policy = Policy.from_toml(f"[stores.{NAME}]\nmax_jobs = 2\n")
    effective = h.effective_policy(policy)
    assert effective.max_jobs == 2 and h.policy.max_jobs == 3  # asked, not applied
    h.apply_policy(policy, effective)
    assert h.policy.max_jobs == 2 and h.policy_source is policy
    kind.put("a", "b", "c")
    assert kind.ids() == {"b", "c"}  # the insert bound follows the applied policy


def test_a_policy_whose_pipeline_leaves_out_count_unbounds_inserts(kind: Kind) -> None:
    kind.handle.apply_policy(Policy.from_toml('[pipeline]\nrules = ["age", "emergency"]\n'))
    assert kind.handle.policy.max_jobs == 3  # still declared, no longer enforced
    kind.put("a", "b", "c", "d")
    assert len(kind.ids()) == 4
    assert kind.handle.cleanup().evicted == 0


def test_declare_adds_options_or_changes_nothing(kind: Kind) -> None:
    h = kind.handle
    with pytest.raises(ValueError, match="max_jobs"):
        h.declare(max_jobs=-1)
    assert h.policy.max_jobs == 3
    h.declare(max_jobs=2)
    assert h.policy.max_jobs == 2
    kind.put("a", "b", "c")
    assert kind.ids() == {"b", "c"}


def test_setup_job_store_cleanup_on_a_managed_store_declares(kind: Kind) -> None:
    found = kind.manager.setup_job_store_cleanup(kind.store, NAME, max_jobs=2)
    assert found is kind.handle and kind.handle.policy.max_jobs == 2


def test_index_figures_and_read_set(kind: Kind) -> None:
    h = kind.handle
    kind.put("a", "b")
    h.stats()  # a Redis index shows the figures of the last stats or pass
    assert len(h.index) == 2 and h.index.total_bytes > 0
    assert "a" in h.index.created
    h.index.touch("a")  # what @touches does: a batched read, applied at the next write
    assert "a" in h.index.reads
    kind.put("c")
    assert h.recency() == ["b", "a", "c"]


def test_manager_sees_and_forgets_the_store(kind: Kind) -> None:
    manager = kind.manager
    assert manager.stores[NAME] == (kind.handle,)
    assert manager.handles() == [kind.handle]
    assert [s.name for s in manager.get_memory_stats().stores] == [NAME]
    kind.put("a", "b", "c", "d", status="running")
    kind.store["a"]["status"] = "done"
    assert manager.forget(kind.store) is True
    assert NAME not in manager.stores and manager.forget(kind.store) is False
    assert manager.run_cleanup().evicted == 0  # no longer passed over
    assert "a" in kind.ids()
    kind.put("e")  # the store's own insert bound still holds
    assert "a" not in kind.ids()


def test_forget_by_handle(kind: Kind) -> None:
    assert kind.manager.forget(kind.handle) is True
    assert kind.manager.stores == {}


def test_both_kinds_build_the_same_plan_from_one_policy(redis_url: str) -> None:
    """One plan per store, whatever the kind: the Redis scripts get the same bounds, ages
    and orders as the Python runner."""
    policy = Policy.from_toml('[memory]\nemergency_order = "oldest"\n'
                              '[defaults]\nmax_age = "10m"\nmax_idle = "1m"\nmax_bytes = "1MB"\n'
                              '[pipeline]\nrules = ["age", "idle", "count", "bytes"]\n')
    local = Kind("local", MemoryManager(policy), redis_url).handle
    remote = Kind("redis", MemoryManager(policy), redis_url).handle
    assert isinstance(local, LocalHandle) and isinstance(remote, RedisHandle)
    assert local.plan == remote.plan
    assert (remote.plan.max_age, remote.plan.max_idle, remote.plan.max_jobs,
            remote.plan.max_bytes) == (600.0, 60.0, 3, 1 << 20)
    assert remote.plan.emergency_order == "oldest" and not remote.plan.emergency
    assert remote.core.plan is remote.plan  # what the insert script is given
