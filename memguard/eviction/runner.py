"""The eviction runner: the one loop that turns what rules name into evictions.

Inserts over a bound and periodic or emergency passes all evict through `apply_rule`, so the
same guarantees hold everywhere: a job that is active (or gone) is never evicted, whatever a
rule says; a rule that keeps naming a job it was refused is stopped; an emergency budget is
spent by the estimated size of each victim. `run_pass` runs a whole `Pipeline` over one store
under its lock and notifies the listeners outside it.

The store is reached through the small `EvictionTarget` protocol (its index, lock and three
operations), so this layer never imports the store classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional, Protocol

from memguard._logging import logger
from memguard.eviction.events import Cause, EvictionEvent
from memguard.eviction.plan import EvictionPlan
from memguard.eviction.rules import VETTED_RULES, Pass, Pipeline, Rule, Soft
from memguard.index.job_index import JobIndex, Key


class EvictionTarget(Protocol):
    """What the runner needs of a store (`memguard.stores.handle.LocalHandle` is one)."""

    name: str

    @property
    def index(self) -> JobIndex: ...

    @property
    def lock(self) -> Any: ...

    def prepare_pass(self, ctx: Optional[Pass] = None) -> None: ...

    def evict_locked(self, key: Key, cause: Cause) -> Optional[Any]: ...

    def soft_expired(self, now: float) -> Iterator[tuple[Key, Cause]]: ...

    def finish_evictions(self, victims: list[Any]) -> list[EvictionEvent]: ...


def log_abandoned(store: str, key: Any) -> None:
    """The one warning of a job evicted as abandoned (`max_running`)."""
    logger.warning("memguard: job %r of store %s stayed active without a write for longer "
                   "than max_running (its worker died?): evicted as abandoned", key, store)


def apply_rule(rule: Rule, target: EvictionTarget, ctx: Pass, victims: list[Any]) -> None:
    """Evict what `rule` names from `target`, lock held, appending to `victims`.

    Whatever a rule says, an active job stays (user rules included); a rule that names a job
    it was refused again is stopped, so a rule that keeps asking for the same running job
    cannot hold the lock forever. An emergency budget in `ctx` is spent by each victim's
    estimated size.
    """
    index = target.index
    vetted = type(rule) in VETTED_RULES or (type(rule) is Soft
                                            and type(rule.rule) in VETTED_RULES)
    refused: set[Any] = set()
    for key, cause in rule(index, ctx):
        if not vetted and not index.evictable(key):
            if key in refused:
                logger.warning("memguard: rule %r keeps naming job %r, which is active or "
                               "gone, in store %s; stopping it for this pass",
                               rule, key, target.name)
                return
            refused.add(key)
            continue
        victim = target.evict_locked(key, cause)
        if victim is not None:
            victims.append(victim)
            if cause is Cause.ABANDONED:  # once per job: it is gone now
                log_abandoned(target.name, key)
            if ctx.budget is not None:
                ctx.budget.remaining -= victim.size or 0


def enforce_insert_bounds(plan: EvictionPlan, target: EvictionTarget, now: float,
                          victims: list[Any]) -> None:
    """Evict what `plan`'s insert rules name from `target` (lock held, the store over a
    bound), appending to `victims`.

    The common case (`plan.fast_count`: a count bound in `lru` order and nothing else) runs
    `MaxJobs`'s own loop here, without the rule's generator and the `Pass` it would need:
    the same victims in the same order, for a step that every insert into a full store pays.
    """
    if plan.fast_count:
        index, limit = target.index, plan.max_jobs
        if limit is None or len(index) <= limit:
            return
        for key in index.candidates("lru"):  # MaxJobs.__call__ through apply_rule, flattened
            victim = target.evict_locked(key, Cause.COUNT)
            if victim is not None:
                victims.append(victim)
            if len(index) <= limit:
                return
        return
    ctx = Pass(now=now, order=plan.order)
    for rule in plan.insert_rules:
        apply_rule(rule, target, ctx, victims)


def enforce_soft_bounds(plan: EvictionPlan, target: EvictionTarget, now: float,
                        victims: list[Any]) -> None:
    """Evict what `plan`'s soft bounds name from `target` (lock held, memory under pressure),
    appending to `victims`: a write into a soft-bounded store while the level is at or above
    `warning` cuts that store back to its bounds at once, instead of at the next pass."""
    ctx = Pass(now=now, order=plan.order, pressure=True)
    for rule in plan.soft_rules:
        apply_rule(rule, target, ctx, victims)


def run_pass(pipeline: Pipeline, target: EvictionTarget, ctx: Pass) -> list[EvictionEvent]:
    """One pass of `pipeline` over `target`: evict what the rules name (a failing rule is
    logged and the next one runs), then release and notify outside the lock."""
    victims: list[Any] = []
    with target.lock:
        target.prepare_pass(ctx)
        for rule in pipeline.rules:
            try:
                apply_rule(rule, target, ctx, victims)
            except Exception:
                logger.exception("memguard: rule %r failed on store %s", rule, target.name)
    return target.finish_evictions(victims)
