"""Redis stores refuse `bounds = "soft"` (for now) with a PolicyError saying where it was set
and what to do instead; hard bounds and `max_age_hard` keep working."""

from __future__ import annotations

from typing import Any

import pytest

from memguard import (
    MemoryManager,
    Policy,
    PolicyError,
    StoreDefinitionError,
    handle,
    managed_store,
)
from memguard.redis import RedisStore


def store_class(manager: MemoryManager, **options: Any) -> type[RedisStore]:
    @managed_store(name="jobs", manager=manager, **options)
    class Jobs(RedisStore):
        pass

    return Jobs


def test_a_redis_store_refuses_soft_bounds_from_the_policy(redis_url: str) -> None:
    manager = MemoryManager(Policy.from_toml('[defaults]\nbounds = "soft"\n', source="p.toml"))
    # at construction the store names itself in a StoreDefinitionError around the message
    with pytest.raises(StoreDefinitionError,
                       match=r'p.toml: stores.jobs.bounds: bounds = "soft" is not '
                                          r"supported on Redis stores yet \(set by p.toml:2\)"):
        store_class(manager)(redis_url)


def test_a_policy_turning_soft_is_refused_whole_with_a_redis_store(redis_url: str) -> None:
    manager = MemoryManager(Policy())
    store = store_class(manager, max_age_hard="1h", max_age="2h")(redis_url)
    assert handle(store).plan.max_age == 3600.0  # the sooner deadline, in the scripts
    with pytest.raises(PolicyError, match=r'expected bounds = "hard" for Redis store'):
        manager.apply_policy(Policy.from_toml('[stores.jobs]\nbounds = "soft"\n'))
    assert handle(store).plan.bounds == "hard"


def test_setup_job_store_cleanup_cannot_make_a_redis_store_soft(redis_url: str) -> None:
    """`declare` (what setup_job_store_cleanup calls on a managed store) goes through the same
    check as a policy: nothing changes, and the error names the store."""
    manager = MemoryManager(Policy())
    store = store_class(manager, max_jobs=5)(redis_url)
    with pytest.raises(PolicyError, match=r'expected bounds = "hard" for Redis store'):
        manager.setup_job_store_cleanup(store, "jobs", bounds="soft")
    assert handle(store).plan.bounds == "hard" and handle(store).plan.max_jobs == 5
