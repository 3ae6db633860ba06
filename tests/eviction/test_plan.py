"""The eviction plan (memguard/eviction/plan.py): one immutable object per store, built
from its policy, that the runner, the Redis scripts and the tuner all read."""

from __future__ import annotations

import attrs
import pytest

from memguard import MemoryManager, Policy, StorePolicy, handle, managed_store
from memguard.eviction.plan import EvictionPlan, plan_for
from memguard.eviction.rules import Emergency, MaxAge, MaxBytes, MaxIdle, MaxJobs, Pipeline
from memguard.stores import LocalHandle
from memguard.testing import FakeClock
from memguard.tools import tune

FULL = StorePolicy(max_age=600, max_idle=60, max_jobs=5, max_bytes=1000)


def extra_rule(index: object, ctx: object) -> list[object]:
    return []


def test_rules_in_pass_order_with_extra_rules_before_the_emergency() -> None:
    plan = plan_for(FULL, extra_rules=(extra_rule,))
    assert plan.rules == (MaxAge(600), MaxIdle(60), MaxJobs(5), MaxBytes(1000), extra_rule,
                          Emergency())
    assert plan.insert_rules == (MaxJobs(5), MaxBytes(1000)) and plan.bounded_on_insert
    assert (plan.max_age, plan.max_idle, plan.max_jobs, plan.max_bytes) == (600, 60, 5, 1000)
    assert plan.emergency and plan.release == ("result",)


def test_the_rule_names_order_nothing_but_leave_rules_out() -> None:
    # `[pipeline] rules` chooses rules; the pass order stays age -> idle -> count -> bytes
    plan = plan_for(FULL, ("bytes", "age"))
    assert plan.rules == (MaxAge(600), MaxBytes(1000))
    assert plan.max_jobs is None and plan.max_idle is None and not plan.emergency
    assert plan.insert_rules == (MaxBytes(1000),)
    assert plan_for(FULL, ("age", "emergency")).insert_rules == ()
    assert not plan_for(FULL, ("age",)).bounded_on_insert


def test_over_asks_about_the_enforced_bounds_only() -> None:
    plan = plan_for(FULL, ("count",))
    assert plan.over(6, 0) and not plan.over(5, 10**9)
    assert plan_for(FULL).over(1, 1001)
    assert not EvictionPlan().over(10**6, 10**12)


def test_orders_and_the_common_case() -> None:
    assert plan_for(StorePolicy(order="oldest")).emergency_order == "oldest"
    plan = plan_for(StorePolicy(order="oldest"), emergency_order="largest")
    assert plan.emergency_order == "largest" and plan.rules[-1] == Emergency("largest")
    assert plan_for(StorePolicy(max_jobs=3)).fast_count
    assert not plan_for(StorePolicy(max_jobs=3, order="largest")).fast_count
    assert not plan_for(StorePolicy(max_jobs=3, max_bytes=10)).fast_count
    assert not plan_for(StorePolicy(max_jobs=3), ("age",)).fast_count


def test_deliveries_are_tracked_only_where_an_order_needs_them() -> None:
    assert not plan_for(FULL).tracks_deliveries
    assert plan_for(StorePolicy(order="delivered")).tracks_deliveries
    assert plan_for(FULL, emergency_order="delivered").tracks_deliveries
    assert plan_for(FULL, extra_rules=(Emergency("delivered"),)).tracks_deliveries
    plan = plan_for(FULL).with_pipeline(Pipeline((Emergency("delivered"),)))
    assert plan.tracks_deliveries and plan.max_jobs == 5  # bounds kept


def test_a_plan_is_immutable() -> None:
    plan = plan_for(FULL)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        plan.max_jobs = 10  # type: ignore[misc]


def test_a_store_builds_its_plan_once_per_policy() -> None:
    manager = MemoryManager(Policy(), clock=FakeClock())

    @managed_store(max_jobs=3, manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    jobs = Jobs()
    h = handle(jobs)
    assert isinstance(h, LocalHandle)
    plan = h.plan
    assert plan == plan_for(h.policy, manager.policy.rules,
                            emergency_order=manager.policy.memory.emergency_order)
    for i in range(10):
        jobs[i] = {"status": "done"}
    h.cleanup()
    assert h.plan is plan  # writes and passes read it, never rebuild it
    assert list(jobs) == [7, 8, 9]
    manager.load_policy(Policy.from_toml("[stores.jobs]\nmax_jobs = 2\n"))
    assert h.plan is not plan and h.plan.max_jobs == 2
    jobs[10] = {"status": "done"}
    assert list(jobs) == [9, 10]


def test_the_tuner_replays_the_bounds_of_the_plan() -> None:
    policy = Policy.from_toml('[defaults]\nmax_jobs = 7\nmax_age = "10m"\n'
                              '[pipeline]\nrules = ["age", "emergency"]\n')
    bounds = tune.current_bounds(policy, ["a"])["a"]
    assert bounds == tune.Bounds(max_jobs=None, max_age=600.0, order="lru")  # count left out
    counted = Policy.from_toml("[defaults]\nmax_jobs = 7\n")
    assert tune.current_bounds(counted, ["a"])["a"].max_jobs == 7


def test_the_cheap_insert_path_evicts_what_the_rule_would() -> None:
    """`fast_count` stores (max_jobs, lru) take the runner's cheap path; the same store with
    a byte bound that never binds takes `apply_rule` with `MaxJobs`. Same random workload
    (active jobs, reads, pins, in-place finishes, deletes): same evictions, same order."""
    import random

    from memguard.testing import capture_evictions

    outcomes = []
    for options in ({}, {"max_bytes": "1GB"}):
        manager = MemoryManager(Policy(), clock=FakeClock())

        @managed_store(name="jobs", max_jobs=5, manager=manager, **options)
        class Jobs(dict):  # type: ignore[type-arg]
            pass

        jobs = Jobs()
        h = handle(jobs)
        assert isinstance(h, LocalHandle) and h.plan.fast_count == (not options)
        rng = random.Random(7)
        with capture_evictions(manager) as events:
            for step in range(3000):
                key = rng.randrange(40)
                action = rng.random()
                if action < 0.5:
                    jobs[key] = {"status": rng.choice(["done", "done", "running"])}
                elif action < 0.7:
                    jobs.get(key)
                elif action < 0.8 and key in jobs:
                    jobs[key]["status"] = "done"
                elif action < 0.85:
                    h.pin(key)
                elif action < 0.9:
                    h.unpin(key)
                elif key in jobs:
                    del jobs[key]
                if step % 500 == 499:
                    h.cleanup()
        outcomes.append(([(e.key, e.cause) for e in events], h.recency(), sorted(jobs)))
    assert len(outcomes[0][0]) > 500  # the bound was busy
    assert outcomes[0] == outcomes[1]
