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

from collections.abc import Iterable, Iterator
from typing import Optional

import attrs

from memguard.eviction.rules import (
    Emergency,
    Eviction,
    MaxAge,
    MaxBytes,
    MaxIdle,
    MaxJobs,
    MaxRunning,
    Pass,
    Pipeline,
    Rule,
    Soft,
)
from memguard.index.job_index import JobIndex
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

    `bounds` is "hard" or "soft" (DESIGN section 10). With "soft", the four bounds are
    `Soft` rules in the pipeline (enforced at a pass under memory pressure, or in an
    emergency), `insert_rules` is empty (an insert never evicts for them), and `soft_rules`
    holds them for `soft_expired`. `max_age_hard` is a deadline either way.
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
    bounds: str = "hard"
    max_age_hard: Optional[float] = None
    soft_rules: tuple[Rule, ...] = ()

    @property
    def soft(self) -> bool:
        """Whether the bounds are priorities rather than deadlines."""
        return self.bounds == "soft"

    def soft_expired(self, index: JobIndex, now: float) -> Iterator[Eviction]:
        """The jobs past a soft bound at `now`, as `(key, cause)`: evictable ones only, the
        bounds in pass order (age, idle, count, bytes), oldest expiry first within each
        (age: oldest creation; idle: least recently used; count and bytes: the store's
        order). Like `JobIndex.candidates`, the consumer (lock held) evicts each key before
        asking for the next; a key it keeps ends that bound's scan. Nothing for hard bounds.
        """
        ctx = Pass(now=now, order=self.order, pressure=True)
        for rule in self.soft_rules:
            yield from rule(index, ctx)

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
        return (self.max_jobs is not None and self.max_bytes is None and self.order == "lru"
                and not self.soft)

    def over(self, jobs: int, weighed_bytes: int) -> bool:
        """Whether a store holding `jobs` jobs of `weighed_bytes` bytes is over a bound
        enforced on insert (soft bounds never are)."""
        if self.soft:
            return False
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
    soft = policy.bounds == "soft"
    max_age_hard = policy.max_age_hard if "age" in names else None
    max_age = policy.max_age if "age" in names else None
    if not soft and max_age_hard is not None:  # two deadlines: the sooner one is the bound
        max_age = max_age_hard if max_age is None else min(max_age, max_age_hard)
    max_idle = policy.max_idle if "idle" in names else None
    max_jobs = policy.max_jobs if "count" in names else None
    max_bytes = policy.max_bytes if "bytes" in names else None
    insert: list[Rule] = []
    if max_jobs is not None:
        insert.append(MaxJobs(max_jobs))
    if max_bytes is not None:
        insert.append(MaxBytes(max_bytes))
    bounded: list[Rule] = []
    if max_age is not None:
        bounded.append(MaxAge(max_age))
    if max_idle is not None:
        bounded.append(MaxIdle(max_idle))
    bounded += insert
    soft_rules: tuple[Rule, ...] = ()
    rules: list[Rule] = []
    if policy.max_running is not None:  # not a pipeline rule name: set, it always runs first
        rules.append(MaxRunning(policy.max_running))
    if soft:
        if max_age_hard is not None:
            rules.append(MaxAge(max_age_hard))
        soft_rules = tuple(bounded)
        rules += [Soft(rule) for rule in bounded]
        insert = []
    else:
        rules += bounded
    rules += extra_rules
    emergency = "emergency" in names
    if emergency:
        rules.append(Emergency(emergency_order))
    return EvictionPlan(
        pipeline=Pipeline(tuple(rules)), insert_rules=tuple(insert), max_age=max_age,
        max_idle=max_idle, max_jobs=max_jobs, max_bytes=max_bytes,
        max_running=policy.max_running, order=policy.order,
        emergency_order=emergency_order or policy.order, emergency=emergency,
        release=policy.release, bounds=policy.bounds, max_age_hard=max_age_hard,
        soft_rules=soft_rules,
        tracks_deliveries=("delivered" in (policy.order, emergency_order)
                           or _delivered(extra_rules)))


def _delivered(rules: Iterable[Rule]) -> bool:
    """Whether a rule evicts in the `delivered` order (its index must keep deliveries)."""
    return any(getattr(rule, "order", None) == "delivered" for rule in rules)
