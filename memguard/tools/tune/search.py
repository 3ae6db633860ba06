"""`memguard tune`: replay a recorded trace against candidate policies, pick the best.

A trace (`memguard.stores.trace`) says when each job was stored, finished (with its size), read,
and deleted. `replay` runs it on a simulated clock against store bounds (`max_jobs`,
`max_age`, the order) with no real memory: usage is modelled as the trace's `base` (what
the process used besides its stores) plus the bytes of the finished jobs held. `tune` tries
a grid of bounds per store, for each order, and keeps the bounds that lose the fewest results
clients came back for while the modelled peak stays under the budget.

What the replay models, and what it does not (see docs/tune.md):

- Bounds as memguard enforces them: `max_jobs` at every write (the job written and active
  jobs are never victims), `max_age` at each pass (every `check_interval` of the trace).
  The recorded run's own evictions are not replayed: the candidate decides. The emergency
  rule is not modelled: a policy is judged by what its bounds alone keep, and the emergency
  rule stays the safety net.
- A result is *wanted* when a read comes for it more than `DELIVERY_WINDOW` after it was
  ready (a client came back for it), or when a read finds it evicted; it is *lost* when a
  read finds it evicted. A read within the window is its delivery (the client that polled
  for it). So the results wanted are nearly the same for every candidate, and the shares
  compare. Reads are those of the trace: dated at the drain that saw them, plus the misses
  the application reported.
- Stores are independent under bounds alone, so each store's grid is replayed on its own and
  the per-store choices are combined; the recommendation is then replayed whole.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

import attrs

from memguard.eviction.plan import plan_for
from memguard.monitor.levels import HYSTERESIS
from memguard.policy.policy import Policy
from memguard.tools.reference import ReferenceOutcome, clairvoyant, demands_from_trace
from memguard.tools.tune.replay import (
    Bounds,
    CheckedOutcome,
    EmergencyModel,
    Outcome,
    _by_store,
    _peak,
    _replay_store,
    replay,
    replay_checked,
)
from memguard.tools.tune.trace import Trace

#: `max_jobs` values tried for every store (None: no count bound).
JOBS_GRID: tuple[Optional[int], ...] = (10, 20, 30, 50, 100, 200, None)
#: `max_age` values tried for every store, in seconds (None: no age bound).
AGE_GRID: tuple[Optional[float], ...] = (600.0, 1200.0, 1800.0, 3600.0, None)
#: Orders tried.
ORDERS: tuple[str, ...] = ("lru", "delivered")
#: The self-check replays a pick this many times as long as the trace.
CHECK_TIMES = 4
#: ... and, when it fails, aims the greedy this share of the budget lower each try,
CHECK_STEP = 0.05
#: ... this many times (down to 55% of the budget) before trying the uniform candidates.
CHECK_TRIES = 10




@attrs.frozen
class Row:
    """One candidate of the table: its name, bounds per store and what its replay gave."""

    name: str
    bounds: Mapping[str, Bounds]
    outcome: Outcome
    fits: bool
    #: The clairvoyant reference at this candidate's modelled peak (its results' bytes).
    reference: Optional[ReferenceOutcome] = None


@attrs.frozen
class TuneResult:
    """The table (`rows`, best first) and the recommendation (None: nothing fits)."""

    budget: int
    base: int
    rows: tuple[Row, ...]
    best: Optional[Row]
    current: Optional[Row]
    #: The clairvoyant reference at the whole budget (what any policy could do at best).
    reference: Optional[ReferenceOutcome] = None
    #: The emergency rule the self-check modelled (None: no check asked for), the check of
    #: the recommendation, and the picks it rejected (at most three) with their checks.
    emergency: Optional[EmergencyModel] = None
    check: Optional[CheckedOutcome] = None
    rejected: tuple[tuple[Row, CheckedOutcome], ...] = ()


def tune(trace: Trace, budget: int, *, current: Optional[Mapping[str, Bounds]] = None,
         jobs_grid: Sequence[Optional[int]] = JOBS_GRID,
         age_grid: Sequence[Optional[float]] = AGE_GRID,
         orders: Sequence[str] = ORDERS,
         emergency: Optional[EmergencyModel] = None) -> TuneResult:
    """Search per-store bounds and the order for the fewest lost results under `budget`.

    Every store's grid (jobs x ages) is replayed on its own, per order. The table lists the
    uniform candidates (the same bounds for every store); the recommendation starts each store
    at its least-losing bounds and, while the combined peak is over the budget, moves the
    store whose next tighter bounds cost the fewest lost results per byte of its peak saved.

    With `emergency` (the policy's emergency rule), the recommendation checks itself first:
    replayed `CHECK_TIMES` as long with the rule modelled (`replay_checked`), it must never
    need the rule and its peak must leave the hysteresis margin under the threshold
    (`emergency_ceiling`). A pick that fails is not recommended: the greedy aims lower, in
    steps of `CHECK_STEP` of the budget, then the uniform candidates are tried best first.
    """
    by_store = _by_store(trace)
    names = trace.stores
    options: dict[tuple[str, int], list[tuple[Bounds, int, int, int, list[tuple[int, int]]]]]
    options = {}
    for order in orders:
        for i in range(len(names)):
            found = []
            for jobs in jobs_grid:
                for age in age_grid:
                    bounds = Bounds(jobs, age, order)
                    _, w, n_lost, curve = _replay_store(by_store[i], bounds,
                                                        trace.check_interval)
                    own_peak = max((held for _, held in curve), default=0)
                    found.append((bounds, w, n_lost, own_peak, curve))
            options[(order, i)] = found
    rows = []
    for order in orders:
        for k in range(len(jobs_grid) * len(age_grid)):
            picks = [options[(order, i)][k] for i in range(len(names))]
            rows.append(_row(trace, budget, f"{order} {picks[0][0].text()}" if picks else order,
                             {names[i]: p[0] for i, p in enumerate(picks)}, picks))
    def pick(at: int) -> Optional[Row]:
        """The greedy's best recommendation for a peak under `at`, replayed whole (the
        figures printed are those of the real thing), or None when none fits."""
        chosen: Optional[Row] = None
        for order in orders:
            row = _greedy(trace, at, order, names,
                          [options[(order, i)] for i in range(len(names))])
            if row is not None and (chosen is None or _rank(row) < _rank(chosen)):
                chosen = row
        if chosen is None:
            return None
        outcome = replay(trace, chosen.bounds)
        return attrs.evolve(chosen, outcome=outcome, fits=outcome.peak < budget)

    best = pick(budget)
    check: Optional[CheckedOutcome] = None
    rejected: list[tuple[Row, CheckedOutcome]] = []
    if emergency is not None and best is not None:
        # The self-check: the pick, replayed CHECK_TIMES as long with the emergency rule
        # modelled, must never need the rule and must leave the hysteresis margin under
        # `emergency`. Else aim the greedy lower, then fall back to the uniform rows.
        ceiling = emergency_ceiling(emergency)
        lower = (pick(int(budget * (1 - CHECK_STEP * k))) for k in range(1, CHECK_TRIES))
        ranked = (row for row in sorted(rows, key=_rank) if row.fits)
        first, best = best, None
        for row in itertools.chain((first,), lower, ranked):
            if row is None or not row.fits:
                continue
            checked = replay_checked(trace, row.bounds, emergency, times=CHECK_TIMES)
            if checked.emergencies == 0 and checked.outcome.peak <= ceiling:
                best, check = row, checked
                break
            if len(rejected) < 3:
                rejected.append((row, checked))
    current_row = None
    if current is not None:
        outcome = replay(trace, current)
        current_row = Row("current policy", current, outcome, outcome.peak < budget)
    rows.sort(key=_rank)
    demands = demands_from_trace(trace)

    def referenced(row: Optional[Row]) -> Optional[Row]:
        if row is None:
            return None
        at = clairvoyant(demands, max(0, row.outcome.peak - trace.base))
        return attrs.evolve(row, reference=at)

    return TuneResult(budget=budget, base=trace.base,
                      rows=tuple(r for r in map(referenced, rows) if r is not None),
                      best=referenced(best) if best is not None and best.fits else None,
                      current=referenced(current_row),
                      reference=clairvoyant(demands, max(0, budget - trace.base), bound=True),
                      emergency=emergency, check=check, rejected=tuple(rejected))


def emergency_ceiling(emergency: EmergencyModel) -> int:
    """The highest modelled peak the self-check accepts: the hysteresis margin under
    `emergency` (the monitor leaves a level only that far below its threshold)."""
    return int(emergency.threshold * (1 - HYSTERESIS))


def _rank(row: Row) -> tuple[bool, float, int, int]:
    return (not row.fits, row.outcome.lost_share, row.outcome.lost, row.outcome.peak)


def _row(trace: Trace, budget: int, name: str, bounds: Mapping[str, Bounds],
         picks: Sequence[tuple[Bounds, int, int, int, list[tuple[int, int]]]]) -> Row:
    peak = trace.base + _peak([p[4] for p in picks])
    outcome = Outcome(peak=peak, wanted=sum(p[1] for p in picks), lost=sum(p[2] for p in picks),
                      evicted=0)
    return Row(name, dict(bounds), outcome, peak < budget)


def _greedy(trace: Trace, budget: int, order: str, names: Sequence[str],
            per_store: Sequence[list[tuple[Bounds, int, int, int, list[tuple[int, int]]]]]
            ) -> Optional[Row]:
    if not names:
        return None
    # each store starts at its fewest lost results (then smallest peak)
    chosen = [min(options, key=lambda o: (o[2], o[3])) for options in per_store]
    for _ in range(len(names) * 64):
        peak = trace.base + _peak([c[4] for c in chosen])
        if peak < budget:
            break
        move: Optional[tuple[float, int, Any]] = None
        for i, options in enumerate(per_store):
            for option in options:
                saved = chosen[i][3] - option[3]
                if saved <= 0:
                    continue
                cost = (max(0, option[2] - chosen[i][2]) + 1e-3) / saved
                if move is None or cost < move[0]:
                    move = (cost, i, option)
        if move is None:
            break
        chosen[move[1]] = move[2]
    return _row(trace, budget, f"tuned ({order})", {names[i]: c[0] for i, c in enumerate(chosen)},
                chosen)




def current_bounds(policy: Policy, stores: Iterable[str]) -> dict[str, Bounds]:
    """The bounds `policy` gives each store name (decorator arguments unknown: none), from
    the eviction plan a store's handle would build from it."""
    return {name: Bounds.from_plan(plan_for(policy.store_policy(name), policy.rules,
                                            emergency_order=policy.memory.emergency_order))
            for name in stores}


def parse_grid(text: str, read: Any) -> tuple[Any, ...]:
    """A comma-separated grid (`none` for no bound), each value read by `read`."""
    values = []
    for part in text.split(","):
        part = part.strip()
        values.append(None if part.lower() in ("none", "-", "") else read(part))
    return tuple(values)
