"""The eviction plan of one store: its rules, bounds and orders as data, built once.

A store's handle builds its `EvictionPlan` when a policy is applied (and when rules are
added), and everything that enforces the store's bounds reads it instead of reading the
policy again:

- the Python runner (`memguard.eviction.runner`) runs `plan.pipeline` at each pass and
  `plan.insert_rules` when an insert puts the store over `plan.max_jobs` or `plan.max_bytes`;
- a Redis store's scripts take their parameters (bounds, ages, orders) from the same fields;
- `memguard tune` replays a recorded trace against the bounds of a plan.

A bound is None when the policy sets none *or* when the policy's `[pipeline] rules` leave its
rule out, so "is `max_jobs` enforced?" has one answer, `plan.max_jobs is not None`,
wherever it is asked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

import attrs

from memguard.eviction.rules import (
    Emergency,
    MaxAge,
    MaxBytes,
    MaxIdle,
    MaxJobs,
    MaxRunning,
    Pipeline,
    Rule,
)
from memguard.policy.options import RULE_NAMES, StorePolicy


@attrs.frozen
class EvictionPlan:
    """What one store enforces, in pipeline order (immutable; a policy change builds a new one).

    `pipeline` is the whole pass: age -> idle -> count -> bytes -> the store's extra rules
    -> emergency. `insert_rules` are the bounds enforced on insert (count, bytes). `order`
    is the store's eviction order; `emergency_order` the order of its emergency rule (the
    policy's `[memory] emergency_order`, else the store's own order); `emergency` whether the
    pipeline has the emergency rule at all. `tracks_deliveries` says whether any order in the
    plan is `delivered` (the index then keeps the delivered set, which costs every read).
    `fast_count` marks the common case, a count bound in `lru` order and nothing else
    enforced on insert, which the runner's `enforce_insert_bounds` takes a cheap path for.
    """

    pipeline: Pipeline = attrs.field(factory=Pipeline)
    insert_rules: tuple[Rule, ...] = ()
    max_age: Optional[float] = None
    max_idle: Optional[float] = None
    max_jobs: Optional[int] = None
    max_bytes: Optional[int] = None
    #: Active jobs not written for this long are evicted as abandoned (None: never).
    max_running: Optional[float] = None
    order: str = "lru"
    emergency_order: str = "lru"
    emergency: bool = False
    release: tuple[str, ...] = ("result",)
    tracks_deliveries: bool = False

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules of a pass, in the order they run."""
        return self.pipeline.rules

    @property
    def bounded_on_insert(self) -> bool:
        """Whether an insert can evict (a count or byte bound is enforced)."""
        return bool(self.insert_rules)

    @property
    def fast_count(self) -> bool:
        """The common case: only a count bound on insert, in `lru` order."""
        return self.max_jobs is not None and self.max_bytes is None and self.order == "lru"

    def over(self, jobs: int, weighed_bytes: int) -> bool:
        """Whether a store holding `jobs` jobs of `weighed_bytes` bytes is over a bound."""
        return ((self.max_jobs is not None and jobs > self.max_jobs)
                or (self.max_bytes is not None and weighed_bytes > self.max_bytes))

    def with_pipeline(self, pipeline: Pipeline) -> EvictionPlan:
        """This plan running `pipeline` at each pass instead (bounds unchanged)."""
        return attrs.evolve(self, pipeline=pipeline, tracks_deliveries=(
            self.tracks_deliveries or _delivered(pipeline.rules)))


def plan_for(policy: StorePolicy, rule_names: Iterable[str] = RULE_NAMES, *,
             emergency_order: Optional[str] = None,
             extra_rules: tuple[Rule, ...] = ()) -> EvictionPlan:
    """The plan `policy` makes of a store, keeping only the rules `rule_names` lists, run in
    pass order, with `extra_rules` (a handle's `add_rule`) run after the bounds and before
    the emergency rule."""
    names = frozenset(rule_names)
    max_age = policy.max_age if "age" in names else None
    max_idle = policy.max_idle if "idle" in names else None
    max_jobs = policy.max_jobs if "count" in names else None
    max_bytes = policy.max_bytes if "bytes" in names else None
    insert: list[Rule] = []
    if max_jobs is not None:
        insert.append(MaxJobs(max_jobs))
    if max_bytes is not None:
        insert.append(MaxBytes(max_bytes))
    rules: list[Rule] = []
    if policy.max_running is not None:  # not a pipeline rule name: set, it always runs
        rules.append(MaxRunning(policy.max_running))
    if max_age is not None:
        rules.append(MaxAge(max_age))
    if max_idle is not None:
        rules.append(MaxIdle(max_idle))
    rules += insert
    rules += extra_rules
    emergency = "emergency" in names
    if emergency:
        rules.append(Emergency(emergency_order))
    return EvictionPlan(
        pipeline=Pipeline(tuple(rules)), insert_rules=tuple(insert), max_age=max_age,
        max_idle=max_idle, max_jobs=max_jobs, max_bytes=max_bytes,
        max_running=policy.max_running, order=policy.order,
        emergency_order=emergency_order or policy.order, emergency=emergency,
        release=policy.release,
        tracks_deliveries=("delivered" in (policy.order, emergency_order)
                           or _delivered(extra_rules)))


def _delivered(rules: Iterable[Rule]) -> bool:
    """Whether a rule evicts in the `delivered` order (its index must keep deliveries)."""
    return any(getattr(rule, "order", None) == "delivered" for rule in rules)
