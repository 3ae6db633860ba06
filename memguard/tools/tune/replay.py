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
