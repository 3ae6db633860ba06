"""Replaying a trace against store bounds on a simulated clock, with no real memory."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Optional

import attrs

from memguard.eviction.plan import EvictionPlan
from memguard.policy.units import format_duration
from memguard.tools.tune.trace import Record, Trace

#: Seconds after a result is ready within which a read is its delivery (the client polling
#: for it), not a client coming back for it.
DELIVERY_WINDOW = 60.0





@attrs.frozen
class Bounds:
    """The bounds a candidate gives one store (the part of an `EvictionPlan` replayed)."""

    max_jobs: Optional[int] = None
    max_age: Optional[float] = None
    order: str = "lru"

    @classmethod
    def from_plan(cls, plan: EvictionPlan) -> Bounds:
        """The bounds `plan` enforces, as a store's handle would: a bound the policy's
        `[pipeline] rules` leave out is not enforced, so it is not replayed either."""
        return cls(plan.max_jobs, plan.max_age, plan.order)

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

    def victims(self, writing: str, order: Optional[str] = None) -> Iterator[str]:
        """Finished results in `order` (default: the bounds' order), `writing` left out."""
        if (order or self.bounds.order) == "delivered":
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


class _Replayer:
    """One store's replay, record by record: its simulated state (`store`), the results
    wanted and lost, and its held-bytes curve."""

    def __init__(self, bounds: Bounds, check_interval: float) -> None:
        self.store = _Store(bounds)
        self.ready: dict[str, float] = {}  # when each result was first seen finished
        self.read_once: set[str] = set()
        self.window = DELIVERY_WINDOW + check_interval  # a read is dated one pass late at most
        self.wanted: set[str] = set()
        self.lost: set[str] = set()
        self.curve: list[tuple[int, int]] = []
        self.check_interval = check_interval
        self.next_pass = check_interval

    def step(self, seq: int, record: Record) -> None:
        store = self.store
        kind, now, key = record[0], float(record[1]), record[3]
        while self.next_pass <= now:
            store.enforce_age(self.next_pass)
            self.next_pass += self.check_interval
        if kind in ("i", "w"):
            if record[4] is not None:
                self.ready.setdefault(key, now)
            self.read_once.discard(key)
            store.put(key, now, record[4], new=kind == "i")
        elif kind == "f":
            self.ready.setdefault(key, now)
            if key in store.created:
                store.set_size(key, record[4])
        elif kind in ("r", "m"):
            if key in store.created:
                store.lru.pop(key, None)
                store.lru[key] = None
                if key in store.finished:
                    store.delivered.pop(key, None)
                    store.delivered[key] = None
                    if key in self.read_once or now - self.ready.get(key, now) > self.window:
                        self.wanted.add(key)
                    self.read_once.add(key)
            elif key in self.ready:
                self.wanted.add(key)
                self.lost.add(key)
        elif kind == "d":  # the application deleted it
            store.drop(key)
        self.note(seq)

    def note(self, seq: int) -> None:
        """Add the held bytes after record `seq` to the curve (when they changed)."""
        if not self.curve or self.curve[-1][1] != self.store.held:
            self.curve.append((seq, self.store.held))


def _replay_store(records: Iterable[tuple[int, Record]], bounds: Bounds,
                  check_interval: float) -> tuple[_Store, int, int, list[tuple[int, int]]]:
    """Replay one store's records; returns the state, wanted, lost and its held curve."""
    replayer = _Replayer(bounds, check_interval)
    for seq, record in records:
        replayer.step(seq, record)
    return replayer.store, len(replayer.wanted), len(replayer.lost), replayer.curve


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
class EmergencyModel:
    """The emergency rule as a replay models it: once usage (`base` plus the results held)
    reaches `threshold`, evict finished results until it is down to `target`, stores
    largest first and each in `order` (as `MemoryManager.evict_bytes` does)."""

    threshold: int
    target: int
    order: str = "lru"


@attrs.frozen
class CheckedOutcome:
    """A whole replay with the emergency rule modelled: the outcome, and how many
    emergencies the rule ran (0 when its bounds alone held the budget)."""

    outcome: Outcome
    emergencies: int
    times: int = 1


def replay_checked(trace: Trace, bounds: Mapping[str, Bounds], emergency: EmergencyModel, *,
                   times: int = 1) -> CheckedOutcome:
    """Replay `trace` (repeated `times` over, one copy after the other, each with keys of
    its own) with `bounds` per store name and the emergency rule modelled: the stores are
    replayed together, in record order, so the rule sees their sum. The peak is that of the
    modelled usage, which an emergency cuts back to its target."""
    names = trace.stores
    replayers = [_Replayer(bounds.get(name, Bounds()), trace.check_interval) for name in names]
    base = trace.base
    total = peak = emergencies = 0
    for seq, record in enumerate(_looped(trace, times)):
        if record[0] == "E":
            continue
        replayer = replayers[record[2]]
        before = replayer.store.held
        replayer.step(seq, record)
        total += replayer.store.held - before  # a record changes its own store only
        if base + total >= emergency.threshold:
            peak = max(peak, base + total)
            emergencies += 1
            need = base + total - emergency.target
            for victim_store in sorted(replayers, key=lambda r: r.store.held, reverse=True):
                need = _evict_bytes(victim_store, need, emergency.order)
                victim_store.note(seq)
                if need <= 0:
                    break
            total = sum(r.store.held for r in replayers)
        peak = max(peak, base + total)
    wanted = sum(len(r.wanted) for r in replayers)
    lost = sum(len(r.lost) for r in replayers)
    evicted = sum(r.store.evicted for r in replayers)
    return CheckedOutcome(Outcome(peak=peak, wanted=wanted, lost=lost, evicted=evicted),
                          emergencies=emergencies, times=times)


def _evict_bytes(replayer: _Replayer, need: int, order: str) -> int:
    """Evict finished results of one store in `order` until `need` bytes are freed; returns
    what is still needed."""
    store = replayer.store
    if order == "largest":
        victims: Iterable[str] = sorted((k for k in store.created if k in store.finished),
                                        key=lambda k: store.size.get(k, 0), reverse=True)
    elif order == "oldest":
        victims = [k for k in store.created if k in store.finished]
    else:
        victims = list(store.victims("", "delivered" if order == "delivered" else "lru"))
    for key in victims:
        if need <= 0:
            break
        need -= store.size.get(key, 0)
        store.evict(key)
    return need


def _looped(trace: Trace, times: int) -> Iterator[Record]:
    """The records of `trace`, `times` over: copy k shifted by k times its length (plus one
    pass), its keys suffixed with k so the copies are distinct jobs."""
    span = trace.duration + trace.check_interval
    for k in range(times):
        shift = k * span
        for record in trace.records:
            if k == 0:
                yield record
            else:
                yield (record[0], float(record[1]) + shift, record[2], f"{record[3]}#{k}",
                       *record[4:])
