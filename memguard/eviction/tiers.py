"""The global emergency order (DESIGN section 10): victims from every store in one order.

When memory must be freed and `[memory] emergency_order = "delivered"` (the default), the
emergency does not visit the stores one after the other (which took the newest, unread
results of a large store before results nobody had read for minutes in a smaller one): it
takes its victims from all of them, tier by tier, in `TIERS` order:

1. `delivered`: results read after they finished, oldest delivery first;
2. `expired`: jobs past a soft bound (`bounds = "soft"`), as each store's soft bounds name
   them (`EvictionTarget.soft_expired`: age, idle, count, bytes, oldest expiry first within
   each). A soft bound names its jobs one at a time, each evicted before the next is named,
   so this tier visits the stores in turn (largest first) rather than merging them;
3. `finished`: results not delivered yet, oldest finished first.

Active jobs are in no tier: never evicted. Within a tier, each store's candidates come in
stamp order (`memguard.index.orders.STAMPS`, one counter for the process), and the stores'
batches are merged on the stamps, so the order is global. Each store's lock is held only to
take a batch of candidates and to evict one of them: a write or a read between the two is
seen (`JobIndex.in_tier`) and the candidate skipped.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

from memguard.eviction.events import Cause
from memguard.eviction.rules import Budget
from memguard.eviction.runner import EvictionTarget

#: The tiers of the global order, first evicted first.
TIERS: tuple[str, ...] = ("delivered", "expired", "finished")
#: Candidates taken from a store at a time.
BATCH = 32


def evict_in_global_order(targets: Sequence[EvictionTarget], budget: Budget, *, now: float,
                          batch: int = BATCH) -> list[tuple[int, Any]]:
    """Evict from `targets` in the global order until `budget` is spent or no tier has a
    candidate left; returns `(position of the target, victim)` in eviction order, the
    victims not yet released: the caller finishes them (`finish_evictions`) outside the
    locks. `now` dates the soft bounds of the `expired` tier."""
    victims: list[tuple[int, Any]] = []
    for tier in TIERS:
        if budget.remaining <= 0:
            break
        if tier == "expired":
            _evict_expired(targets, budget, victims, now)
        else:
            _evict_tier(tier, targets, budget, victims, batch)
    return victims


def _evict_expired(targets: Sequence[EvictionTarget], budget: Budget,
                   victims: list[tuple[int, Any]], now: float) -> None:
    """The middle tier: what each store's soft bounds name at `now`, store after store, each
    evicted (with its bound's cause) before the next is named, until the budget is spent."""
    for at, target in enumerate(targets):
        if budget.remaining <= 0:
            return
        with target.lock:
            for key, cause in target.soft_expired(now):
                victim = target.evict_locked(key, cause)
                if victim is None:
                    continue  # kept: the generator ends that bound's scan by itself
                victims.append((at, victim))
                budget.remaining -= victim.size or 0
                if budget.remaining <= 0:
                    return


def _evict_tier(tier: str, targets: Sequence[EvictionTarget], budget: Budget,
                victims: list[tuple[int, Any]], batch: int) -> None:
    """One tier: a k-way merge of the stores' candidate batches on their stamps (stamps are
    unique, so entries never compare their keys)."""
    heap: list[tuple[int, int, Any]] = []
    pending = [0] * len(targets)
    more = [True] * len(targets)

    def refill(at: int) -> None:
        target = targets[at]
        with target.lock:
            found = target.index.tier(tier, batch)
        for stamp, key in found:
            heapq.heappush(heap, (stamp, at, key))
        pending[at] = len(found)
        more[at] = len(found) >= batch

    for at in range(len(targets)):
        refill(at)
    while heap and budget.remaining > 0:
        stamp, at, key = heapq.heappop(heap)
        pending[at] -= 1
        target = targets[at]
        with target.lock:
            if target.index.in_tier(tier, key, stamp):
                victim = target.evict_locked(key, Cause.EMERGENCY)
                if victim is not None:
                    victims.append((at, victim))
                    budget.remaining -= victim.size or 0
        if pending[at] == 0 and more[at]:
            refill(at)
