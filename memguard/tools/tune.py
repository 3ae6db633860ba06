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

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import attrs

from memguard.errors import TraceError
from memguard.policy.options import ActiveWhen
from memguard.policy.policy import Policy
from memguard.policy.units import format_duration, format_size
from memguard.stores.trace import TRACE_VERSION

#: `max_jobs` values tried for every store (None: no count bound).
JOBS_GRID: tuple[Optional[int], ...] = (10, 20, 30, 50, 100, 200, None)
#: `max_age` values tried for every store, in seconds (None: no age bound).
AGE_GRID: tuple[Optional[float], ...] = (600.0, 1200.0, 1800.0, 3600.0, None)
#: Orders tried.
ORDERS: tuple[str, ...] = ("lru", "delivered")
#: Seconds after a result is ready within which a read is its delivery (the client polling
#: for it), not a client coming back for it.
DELIVERY_WINDOW = 60.0

Record = tuple[Any, ...]




@attrs.frozen
class Trace:
    """A parsed trace: its header, its store names, and its records in file order (each
    ``(kind, time, store, hash, *extra)``; the recorded run's evictions are marked ``E``
    instead of ``d`` so a replay can skip them)."""

    header: Mapping[str, Any]
    stores: tuple[str, ...]
    records: tuple[Record, ...]

    @property
    def base(self) -> int:
        """Memory the process used besides its stores when recording started (0: unknown)."""
        base = self.header.get("base")
        return int(base) if isinstance(base, (int, float)) else 0

    @property
    def check_interval(self) -> float:
        value = self.header.get("check_interval")
        return float(value) if isinstance(value, (int, float)) and value > 0 else 120.0

    @property
    def duration(self) -> float:
        return float(self.records[-1][1]) if self.records else 0.0


def read_trace(path: Union[str, Path]) -> Trace:
    """Read a trace written by `memguard.stores.trace.Recorder`; raises TraceError on bad input."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TraceError(f"{path}: cannot read the trace: {error}") from None
    if not lines:
        raise TraceError(f"{path}: empty file; expected a trace written by memguard "
                         "(MemoryManager.record or memguard stress --record)")
    header = _json(path, 1, lines[0])
    if not isinstance(header, dict) or header.get("memguard_trace") != TRACE_VERSION:
        raise TraceError(f"{path}, line 1: not a memguard trace header (expected "
                         f'{{"memguard_trace": {TRACE_VERSION}, ...}}), got {lines[0][:80]!r}')
    stores: dict[int, str] = {}
    records: list[Record] = []
    last_removal: dict[tuple[int, str], int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        record = _json(path, number, line)
        if not isinstance(record, list) or not record or record[0] not in _ARITY:
            raise TraceError(f"{path}, line {number}: expected a record such as "
                             f'["r", 12.5, 0, "9f3a..."], got {line[:80]!r}')
        kind = record[0]
        if len(record) != _ARITY[kind]:
            raise TraceError(f"{path}, line {number}: a {kind!r} record has {_ARITY[kind]} "
                             f"fields, this one {len(record)}: {line[:80]!r}")
        if kind == "s":
            stores[int(record[1])] = str(record[2])
            continue
        if record[2] not in stores:
            raise TraceError(f"{path}, line {number}: store {record[2]!r} was never "
                             "declared by an 's' record")
        if kind == "d":
            last_removal[(record[2], record[3])] = len(records)
        elif kind == "e":
            at = last_removal.pop((record[2], record[3]), None)
            if at is not None:
                records[at] = ("E", *records[at][1:])  # the recorded policy's eviction
            continue
        records.append(tuple(record))
    names = tuple(stores.get(i, f"store{i}") for i in range(max(stores, default=-1) + 1))
    return Trace(header=header, stores=names, records=tuple(records))


_ARITY = {"s": 3, "i": 5, "w": 5, "f": 5, "r": 4, "m": 4, "d": 4, "e": 6}


def _json(path: Path, number: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise TraceError(f"{path}, line {number}: not JSON ({error.msg}): {line[:80]!r}") from None




@attrs.frozen
class Bounds:
    """The bounds a candidate gives one store."""

    max_jobs: Optional[int] = None
    max_age: Optional[float] = None
    order: str = "lru"

    def text(self) -> str:
        jobs = "-" if self.max_jobs is None else str(self.max_jobs)
        age = "-" if self.max_age is None else format_duration(self.max_age)
        return f"{jobs}/{age}"


@attrs.frozen
class Outcome:
    """What a replay measured: the modelled peak (bytes, `base` included), the results
    wanted and lost, the evictions, and the held-bytes curve (record number, bytes)."""

    peak: int
    wanted: int
    lost: int
    evicted: int
    curve: tuple[tuple[int, int], ...] = attrs.field(default=(), repr=False, eq=False)

    @property
    def lost_share(self) -> float:
        return self.lost / self.wanted if self.wanted else 0.0


class _Store:
    """The simulated state of one store."""

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.lru: dict[str, None] = {}
        self.delivered: dict[str, None] = {}
        self.created: dict[str, float] = {}
        self.size: dict[str, int] = {}
        self.finished: set[str] = set()
        self.held = 0
        self.evicted = 0

    def put(self, key: str, now: float, size: Optional[int], new: bool) -> None:
        if key not in self.created or new:
            self.drop(key)
            self.created[key] = now
        self.lru.pop(key, None)
        self.lru[key] = None
        self.delivered.pop(key, None)
        self.set_size(key, size)
        self.enforce_count(writing=key)

    def set_size(self, key: str, size: Optional[int]) -> None:
        self.held -= self.size.get(key, 0)
        if size is None:
            self.size[key] = 0
            self.finished.discard(key)
        else:
            self.size[key] = int(size)
            self.held += int(size)
            self.finished.add(key)

    def drop(self, key: str) -> None:
        if self.created.pop(key, None) is None:
            return
        self.lru.pop(key, None)
        self.delivered.pop(key, None)
        self.held -= self.size.pop(key, 0)
        self.finished.discard(key)

    def evict(self, key: str) -> None:
        self.drop(key)
        self.evicted += 1

    def enforce_count(self, writing: str) -> None:
        limit = self.bounds.max_jobs
        while limit is not None and len(self.created) > limit:
            victim = next(self.victims(writing), None)
            if victim is None:
                return
            self.evict(victim)

    def victims(self, writing: str) -> Iterator[str]:
        if self.bounds.order == "delivered":
            for key in self.delivered:
                if key != writing:
                    yield key
            for key in self.lru:
                if key in self.finished and key != writing and key not in self.delivered:
                    yield key
        else:
            for key in self.lru:
                if key in self.finished and key != writing:
                    yield key

    def enforce_age(self, now: float) -> None:
        if self.bounds.max_age is None:
            return
        cutoff = now - self.bounds.max_age
        for key in [k for k, t in self.created.items() if t <= cutoff and k in self.finished]:
            self.evict(key)


def _replay_store(records: Iterable[tuple[int, Record]], bounds: Bounds,
                  check_interval: float) -> tuple[_Store, int, int, list[tuple[int, int]]]:
    """Replay one store's records; returns the state, wanted, lost and its held curve."""
    store = _Store(bounds)
    ready: dict[str, float] = {}  # when each result was first seen finished
    read_once: set[str] = set()
    window = DELIVERY_WINDOW + check_interval  # a read is dated one pass late at most
    wanted: set[str] = set()
    lost: set[str] = set()
    curve: list[tuple[int, int]] = []
    next_pass = check_interval
    for seq, record in records:
        kind, now, key = record[0], float(record[1]), record[3]
        while next_pass <= now:
            store.enforce_age(next_pass)
            next_pass += check_interval
        if kind in ("i", "w"):
            if record[4] is not None:
                ready.setdefault(key, now)
            read_once.discard(key)
            store.put(key, now, record[4], new=kind == "i")
        elif kind == "f":
            ready.setdefault(key, now)
            if key in store.created:
                store.set_size(key, record[4])
        elif kind in ("r", "m"):
            if key in store.created:
                store.lru.pop(key, None)
                store.lru[key] = None
                if key in store.finished:
                    store.delivered.pop(key, None)
                    store.delivered[key] = None
                    if key in read_once or now - ready.get(key, now) > window:
                        wanted.add(key)
                    read_once.add(key)
            elif key in ready:
                wanted.add(key)
                lost.add(key)
        elif kind == "d":  # the application deleted it
            store.drop(key)
        if not curve or curve[-1][1] != store.held:
            curve.append((seq, store.held))
    return store, len(wanted), len(lost), curve


def _peak(curves: Sequence[Sequence[tuple[int, int]]]) -> int:
    """The highest sum of several stores' held-bytes curves (step functions of the record
    number)."""
    points: list[tuple[int, int, int]] = []
    for i, curve in enumerate(curves):
        points += [(seq, i, held) for seq, held in curve]
    points.sort()
    current = [0] * len(curves)
    total = peak = 0
    for _, i, held in points:
        total += held - current[i]
        current[i] = held
        peak = max(peak, total)
    return peak


def _by_store(trace: Trace) -> dict[int, list[tuple[int, Record]]]:
    out: dict[int, list[tuple[int, Record]]] = {i: [] for i in range(len(trace.stores))}
    for seq, record in enumerate(trace.records):
        if record[0] != "E":
            out[record[2]].append((seq, record))
    return out


def replay(trace: Trace, bounds: Mapping[str, Bounds]) -> Outcome:
    """Replay `trace` with `bounds` per store name (a store not named is unbounded)."""
    by_store = _by_store(trace)
    curves = []
    wanted = lost = evicted = 0
    for i, name in enumerate(trace.stores):
        store, w, n_lost, curve = _replay_store(by_store[i], bounds.get(name, Bounds()),
                                           trace.check_interval)
        wanted, lost, evicted = wanted + w, lost + n_lost, evicted + store.evicted
        curves.append(curve)
    return Outcome(peak=trace.base + _peak(curves), wanted=wanted, lost=lost, evicted=evicted)




@attrs.frozen
class Row:
    """One candidate of the table: its name, bounds per store and what its replay gave."""

    name: str
    bounds: Mapping[str, Bounds]
    outcome: Outcome
    fits: bool


@attrs.frozen
class TuneResult:
    """The table (`rows`, best first) and the recommendation (None: nothing fits)."""

    budget: int
    base: int
    rows: tuple[Row, ...]
    best: Optional[Row]
    current: Optional[Row]


def tune(trace: Trace, budget: int, *, current: Optional[Mapping[str, Bounds]] = None,
         jobs_grid: Sequence[Optional[int]] = JOBS_GRID,
         age_grid: Sequence[Optional[float]] = AGE_GRID,
         orders: Sequence[str] = ORDERS) -> TuneResult:
    """Search per-store bounds and the order for the fewest lost results under `budget`.

    Every store's grid (jobs x ages) is replayed on its own, per order. The table lists the
    uniform candidates (the same bounds for every store); the recommendation starts each store
    at its least-losing bounds and, while the combined peak is over the budget, moves the
    store whose next tighter bounds cost the fewest lost results per byte of its peak saved.
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
    best: Optional[Row] = None
    for order in orders:
        row = _greedy(trace, budget, order, names, [options[(order, i)] for i in range(len(names))])
        if row is not None and (best is None or _rank(row) < _rank(best)):
            best = row
    if best is not None:  # replayed whole: the figures printed are those of the real thing
        outcome = replay(trace, best.bounds)
        best = attrs.evolve(best, outcome=outcome, fits=outcome.peak < budget)
    current_row = None
    if current is not None:
        outcome = replay(trace, current)
        current_row = Row("current policy", current, outcome, outcome.peak < budget)
    rows.sort(key=_rank)
    return TuneResult(budget=budget, base=trace.base, rows=tuple(rows),
                      best=best if best is not None and best.fits else None, current=current_row)


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
    """The bounds `policy` gives each store name (decorator arguments unknown: none)."""
    out = {}
    for name in stores:
        store = policy.store_policy(name)
        out[name] = Bounds(store.max_jobs, store.max_age, store.order)
    return out


def table(result: TuneResult, *, top: int = 15) -> str:
    """The candidates as text: each one's modelled peak and lost-result share."""
    head = (f"budget {format_size(result.budget)} (base {format_size(result.base)} + the "
            "results held); candidates (max_jobs/max_age for every store), best first:")
    lines = [head, f"  {'candidate':<28} {'peak':>9}  {'lost':>13}  fits"]
    shown = list(result.rows[:top])
    extra = [r for r in (result.current, result.best) if r is not None]
    for row in extra + shown:
        o = row.outcome
        lost = f"{o.lost}/{o.wanted} {o.lost_share:4.0%}"
        lines.append(f"  {row.name:<28} {format_size(o.peak):>9}  {lost:>13}  "
                     f"{'yes' if row.fits else 'NO'}")
    if len(result.rows) > top:
        lines.append(f"  ... {len(result.rows) - top} more (--top N shows more)")
    if result.best is None:
        lines.append("no candidate keeps the modelled peak under the budget: raise --limit, "
                     "or add smaller values to the grid (--jobs, --ages)")
    else:
        lines.append("recommended, per store (max_jobs/max_age, order " +
                     next(iter(result.best.bounds.values())).order + "):")
        for name, bounds in result.best.bounds.items():
            lines.append(f"  {name:<20} {bounds.text()}")
    return "\n".join(lines)


def to_toml(result: TuneResult, policy: Policy, limit: int, source: str) -> str:
    """The recommendation as a policy file: `policy`'s memory thresholds at `limit` (in
    bytes), the order for the stores and the emergency rule, and each store's bounds."""
    best = result.best
    if best is None:
        raise ValueError("no recommendation to write: no candidate fits the budget")
    order = next(iter(best.bounds.values())).order if best.bounds else "lru"
    memory = policy.memory
    thresholds = memory.resolve(limit)
    o = best.outcome
    lines = [
        f"# written by memguard tune from {source}: modelled peak {format_size(o.peak)}, "
        f"{o.lost} of {o.wanted} results lost",
        "",
        "[memory]",
        f'scope = "{memory.scope}"',
        f"limit = {_size_text(limit)}",
    ]
    for name in ("warning", "warning_heap", "emergency", "emergency_target", "critical"):
        value = getattr(thresholds, name)
        if value is not None:
            lines.append(f"{name} = {_size_text(value)}")
    lines += [f"check_interval = {memory.check_interval!r}",
              f"gc_interval = {memory.gc_interval!r}",
              f'emergency_order = "{order}"', "", "[defaults]", f'order = "{order}"']
    active = policy.store_policy("_").active
    if isinstance(active, ActiveWhen):
        statuses = ", ".join(json.dumps(s) for s in sorted(active.values))
        lines.append(f'active = {{ field = {json.dumps(active.field)}, in = [{statuses}] }}')
    lines.append("")
    for name, bounds in best.bounds.items():
        lines.append(f"[stores.{json.dumps(name) if not name.isidentifier() else name}]")
        if bounds.max_jobs is not None:
            lines.append(f"max_jobs = {bounds.max_jobs}")
        if bounds.max_age is not None:
            lines.append(f'max_age = "{format_duration(bounds.max_age)}"')
        lines.append("")
    return "\n".join(lines)


def _size_text(value: int) -> str:
    """A size as policies write it: ``"400MB"`` when it is whole MiB, else bytes."""
    mib = 1024 * 1024
    return f'"{value // mib}MB"' if value % mib == 0 else str(value)


def parse_grid(text: str, read: Any) -> tuple[Any, ...]:
    """A comma-separated grid (`none` for no bound), each value read by `read`."""
    values = []
    for part in text.split(","):
        part = part.strip()
        values.append(None if part.lower() in ("none", "-", "") else read(part))
    return tuple(values)
