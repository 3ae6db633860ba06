"""Eviction rules: one small callable per strategy, composed with `|`.

A rule is called as `rule(index, ctx)` with the store's `JobIndex` and the running `Pass`, and
yields `(key, cause)` pairs to evict. The pipeline evicts each pair before asking for the next,
so a rule can stop as soon as its bound is met and touches only what it evicts. Any callable
with that signature can stand in for a rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Optional, Protocol, cast

import attrs

from memguard.eviction.events import Cause
from memguard.index.job_index import JobIndex, Key
from memguard.policy.units import positive_count, positive_duration, positive_size


@attrs.define
class Budget:
    """Bytes an emergency still has to free; shared by every store of one cleanup."""

    remaining: int


@attrs.define
class Pass:
    """What one run of the pipeline knows: the time, the store's order, an emergency budget,
    and whether memory is under pressure (`pressure`: the monitor's level was at or above
    `warning` when the pass started), which is when soft bounds are enforced.

    `store_emergency` False: the store's own `Emergency` rule stands aside, because the
    manager spends the budget across all stores in the global order (`memguard.eviction.
    tiers`); the rest of the pass (bounds, and the re-check of every active job that an
    emergency makes) still runs."""

    now: float
    order: str = "lru"
    budget: Optional[Budget] = None
    pressure: bool = False
    store_emergency: bool = True


Eviction = tuple[Key, Cause]


class Rule(Protocol):
    """The rule protocol: yield `(key, cause)` pairs to evict, in order."""

    def __call__(self, index: JobIndex, ctx: Pass) -> Iterable[Eviction]: ...


class _Composable:
    """`a | b` builds a pipeline running `a` then `b` (tenacity's `stop_a | stop_b`)."""

    def __or__(self, other: Any) -> Pipeline:
        return Pipeline((cast(Rule, self),)).__or__(other)

    def __ror__(self, other: Any) -> Pipeline:
        return Pipeline((other,)).__or__(self)


@attrs.frozen
class MaxAge(_Composable):
    """Evict jobs created more than `seconds` ago (absolute expiry), oldest first."""

    seconds: float = attrs.field(converter=positive_duration)

    def __call__(self, index: JobIndex, ctx: Pass) -> Iterator[Eviction]:
        for key in index.created_before(ctx.now - self.seconds):
            yield key, Cause.AGE


@attrs.frozen
class MaxIdle(_Composable):
    """Evict jobs not touched for `seconds` (sliding expiry, dated to the pass).

    Touches carry no timestamp (the read path never reads the clock); each pass lays an
    epoch marker into the recency order instead, and a job behind a marker older than
    `seconds` is idle. Only stores with this rule pay for the markers.
    """

    seconds: float = attrs.field(converter=positive_duration)

    def __call__(self, index: JobIndex, ctx: Pass) -> Iterator[Eviction]:
        for key in index.idle_before(ctx.now - self.seconds):
            yield key, Cause.IDLE
        # Date this pass's touches for the next; markers closer than 1/32 of the idle time
        # would add precision nobody needs and crowd out the old ones.
        index.lay_epoch(ctx.now, min_gap=self.seconds / 32)


@attrs.frozen
class MaxRunning(_Composable):
    """Evict active jobs not written (stored) for `seconds`: their worker died or never
    wrote the end of the job. Cause `abandoned`, logged once per job. Runs first in a pass,
    walking jobs in write order from the oldest, so it touches only what it evicts and
    the finished jobs it drops from the watch."""

    seconds: float = attrs.field(converter=positive_duration)

    def __call__(self, index: JobIndex, ctx: Pass) -> Iterator[Eviction]:
        for key in index.written_before(ctx.now - self.seconds):
            yield key, Cause.ABANDONED


@attrs.frozen
class MaxJobs(_Composable):
    """Keep at most `count` jobs, evicting in the store's order (active jobs stay)."""

    count: int = attrs.field(converter=positive_count)

    def __call__(self, index: JobIndex, ctx: Pass) -> Iterator[Eviction]:
        if len(index) <= self.count:
            return
        for key in index.candidates(ctx.order):
            yield key, Cause.COUNT
            if len(index) <= self.count:
                return


@attrs.frozen
class MaxBytes(_Composable):
    """Keep the weighed jobs under `size` bytes, evicting in the store's order."""

    size: int = attrs.field(converter=positive_size)

    def __call__(self, index: JobIndex, ctx: Pass) -> Iterator[Eviction]:
        if index.total_bytes <= self.size:
            return
        for key in index.candidates(ctx.order, weighed_only=True):
            yield key, Cause.BYTES
            if index.total_bytes <= self.size:
                return


@attrs.frozen
class Emergency(_Composable):
    """Under memory pressure, evict in `order` until the pass's budget is spent.

    Outside an emergency (no budget) it does nothing, so it can sit in every pipeline.
    """

    order: Optional[str] = None

    def __call__(self, index: JobIndex, ctx: Pass) -> Iterator[Eviction]:
        budget = ctx.budget
        if budget is None or budget.remaining <= 0 or not ctx.store_emergency:
            return
        for key in index.candidates(self.order or ctx.order):
            yield key, Cause.EMERGENCY
            if budget.remaining <= 0:
                return


@attrs.frozen
class Soft(_Composable):
    """A bound made a priority (`bounds = "soft"`, DESIGN section 10): `rule` names what is
    past the bound, but only under memory pressure (`ctx.pressure`) or in an emergency
    (`ctx.budget`); with room to spare it names nothing and the jobs stay. In an emergency it
    stops once the budget is spent, so it never evicts more than the emergency asked for. In
    an emergency spent in the global order (`ctx.store_emergency` False) it stands aside:
    the jobs past a soft bound are that order's middle tier (`memguard.eviction.tiers`),
    after the delivered results of every store."""

    rule: Rule

    def __call__(self, index: JobIndex, ctx: Pass) -> Iterator[Eviction]:
        budget = ctx.budget
        if not ctx.pressure and (budget is None or not ctx.store_emergency):
            return
        if budget is not None and budget.remaining <= 0:
            return
        for eviction in self.rule(index, ctx):
            yield eviction
            if budget is not None and not ctx.pressure and budget.remaining <= 0:
                return


#: The built-in rules. They name only keys the index's own scans found evictable, with the
#: store's lock held, so the runner need not look again; any other rule (a subclass
#: included) has each key it names checked.
VETTED_RULES: frozenset[type] = frozenset({MaxAge, MaxIdle, MaxJobs, MaxBytes, Emergency,
                                           MaxRunning, Soft})


@attrs.frozen
class Pipeline:
    """Rules run in order; `a | b` appends, a plain callable stands in for a rule (tenacity's
    `stop_a | stop_b`). Calling it yields what its rules name, one rule after the other; the
    runner in `memguard.eviction.runner` evicts them."""

    rules: tuple[Rule, ...] = ()

    def __or__(self, other: Any) -> Pipeline:
        added = other.rules if isinstance(other, Pipeline) else (other,)
        return Pipeline(self.rules + tuple(added))

    def __ror__(self, other: Any) -> Pipeline:
        return Pipeline((other,)) | self

    def __call__(self, index: JobIndex, ctx: Pass) -> Iterator[Eviction]:
        for rule in self.rules:
            yield from rule(index, ctx)
