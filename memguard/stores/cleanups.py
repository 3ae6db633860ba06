"""Cleanups across all the stores of a manager: the periodic pass and the emergency budget.

The manager decides when (its monitor's clock, pressure and level); these functions decide
how a cleanup is spread over the stores. A store whose pass raises is logged and skipped:
the other stores still get theirs.
"""

from __future__ import annotations

import itertools
import logging
import operator
from collections.abc import Sequence
from typing import Callable, Optional

from memguard._logging import announce, logger
from memguard.eviction.events import CleanupReport, EvictionEvent
from memguard.eviction.rules import Budget, Pass
from memguard.eviction.tiers import evict_in_global_order
from memguard.stores.handle import LocalHandle
from memguard.stores.protocol import StoreHandle


def periodic_pass(stores: Sequence[StoreHandle], *, clock: Callable[[], float],
                  under_pressure: Callable[[], bool]) -> CleanupReport:
    """One periodic pass over `stores`; `under_pressure` is asked once, and only if some
    store has work due (soft bounds are enforced by a pass only under pressure)."""
    start = clock()
    pressure: Optional[bool] = None
    events: list[EvictionEvent] = []
    for store in stores:
        if type(store) is LocalHandle and store.nothing_due(start):
            continue  # O(1): a pass would evict nothing and has no upkeep to do
        if pressure is None:
            pressure = under_pressure()
        events += isolated(store, Pass(now=start, order=store.policy.order, pressure=pressure))
    if not events:
        return CleanupReport("periodic", {}, 0, start, clock() - start)
    report = CleanupReport.from_events("periodic", events, started_at=start,
                                       duration=clock() - start)
    if report.evicted:  # announced: the seed's runbook greps for these lines
        announce(logging.INFO, "Memory cleanup: %s", report.summary())
    return report


def spend_budget(stores: Sequence[StoreHandle], amount: int, *, now: float,
                 emergency_order: str) -> list[EvictionEvent]:
    """Free about `amount` bytes (by estimate) from `stores` (`MemoryManager.evict_bytes`
    says in which order)."""
    budget = Budget(amount)
    events: list[EvictionEvent] = []
    for one in stores:  # sizes inserts left to weigh: the order goes by bytes
        if isinstance(one, LocalHandle):
            with one.lock:
                one.index.weigh_deferred()
    ordered = sorted(stores, key=lambda h: h.index.total_bytes, reverse=True)
    if emergency_order == "delivered":
        local = [h for h in ordered if isinstance(h, LocalHandle)
                 and h.plan.emergency and h.plan.emergency_order == "delivered"]
        for one in local:  # bounds first, and every active job looked at again
            events += isolated(one, Pass(now=now, order=one.policy.order,
                                         budget=budget, store_emergency=False))
        if budget.remaining > 0 and local:
            events += _global_order(local, budget, now)
        # Then each store's own emergency rule: Redis stores' (on Redis' memory), and
        # in-process ones only if budget is left (what no tier holds: none, as a rule).
        ordered = [h for h in ordered if budget.remaining > 0 or not isinstance(h, LocalHandle)]
    for store in ordered:
        events += isolated(store, Pass(now=now, order=store.policy.order, budget=budget))
    return events


def notice_finished(stores: Sequence[StoreHandle]) -> None:
    """Let every in-process store look again at a batch of its running jobs."""
    for store in stores:
        if isinstance(store, LocalHandle):
            try:
                store.notice_finished()
            except Exception:
                logger.exception("memguard: re-checking the running jobs of store %s "
                                 "failed", store.name)


def isolated(store: StoreHandle, ctx: Pass) -> list[EvictionEvent]:
    """One store's pass; a failure is logged and the other stores still get theirs."""
    try:
        return store.run_pass(ctx)
    except Exception:
        logger.exception("memguard: the pass over store %s failed", store.name)
        return []


def _global_order(stores: list[LocalHandle], budget: Budget, now: float) -> list[EvictionEvent]:
    """Spend `budget` across `stores` in the global order; a failure is logged (the stores'
    own emergency rules then take over)."""
    try:
        victims = evict_in_global_order(stores, budget, now=now)
    except Exception:
        logger.exception("memguard: the emergency in the global order failed")
        return []
    events: list[EvictionEvent] = []
    for at, run in itertools.groupby(victims, key=operator.itemgetter(0)):
        # each run of one store's victims at once: listeners hear them in eviction order
        events += stores[at].finish_evictions([victim for _, victim in run])
    return events
