"""The clairvoyant reference (DESIGN section 10): how few results a policy that knows the
future would lose at the same memory budget.

The guard's second promise is to lose as few results that a client will come back for as the
memory allows. To say how close memguard comes, a replay needs a floor: this module replays
the same demands (each finished result: when it was ready, its size, when it is read) with a
policy that knows every result's next read. When holding a result would put the bytes held
over the budget, it evicts the held results whose next read is furthest away, largest first
among equals; a result with no read left is dropped at its last read (it can only cost
memory), so "never read again" goes first by construction.

Which reference this is, said plainly: a greedy Belady-style policy with sizes
(``METHOD``). With sizes that vary, exact OPT is NP-hard; this greedy is a heuristic for it,
not a proven bound, so a memguard figure *below* it is possible in principle (rare: the
greedy is what the flow-based bounds of Berger, Beckmann and Harchol-Balter measure against,
and it is within a few points of them on traces like ours). Figures printed with it say
"clairvoyant reference (greedy Belady with sizes)".

A result is *lost* when a read finds it evicted (once per result); it is *wanted* when the
trace says a client came back for it (`Demand.wanted`) or a read found it evicted: the same
rules `memguard stress` and `memguard tune` count memguard's own losses by, so the two
figures compare. Results cannot come back once evicted (a job store is not a cache in front
of a backing store: an evicted result is gone), which is what makes the loss count once.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Iterable
from typing import Any, Optional

import attrs

#: The name of the reference every figure of this module uses (printed beside it).
METHOD = "greedy Belady with sizes"


@attrs.frozen
class Demand:
    """One finished result as the future asks for it.

    `ready` is when it was finished (from then on it holds `size` bytes); `reads` every read
    of it from then on, in time order (the delivery poll and later visits alike); `end` when
    the application removed it itself (None: never), after which nothing reads it. `wanted`
    says a client came back for it even when every read is served (a later visit); a result
    whose delivery read finds it evicted is wanted too, as memguard's own figures count it.
    """

    key: Hashable
    ready: float
    size: int
    reads: tuple[float, ...] = ()
    end: Optional[float] = None
    wanted: bool = False


@attrs.frozen
class ReferenceOutcome:
    """What the clairvoyant replay gave: at `budget` bytes of results, `lost` of `wanted`
    results lost; `held_peak` is the most it held at once (never above `budget`),
    `evicted` the results it had to evict while still to be read."""

    budget: int
    wanted: int
    lost: int
    held_peak: int
    evicted: int
    method: str = METHOD
    #: At least this many results are lost by any policy at `budget`, the exact optimum
    #: included (`lower_bound`, an LP relaxation); None when not computed.
    lower_bound: Optional[int] = None

    @property
    def lost_share(self) -> float:
        return self.lost / self.wanted if self.wanted else 0.0

    def text(self) -> str:
        """``3 of 236 (1%) lost``, and ``(the exact optimum: at least 2, LP bound)`` when
        the bound was computed."""
        bound = ("" if self.lower_bound is None
                 else f" (the exact optimum: at least {self.lower_bound}, LP bound)")
        return f"{self.lost} of {self.wanted} ({self.lost_share:.0%}) lost{bound}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the fields and the share."""
        return {"method": self.method, "budget": self.budget, "wanted": self.wanted,
                "lost": self.lost, "lost_share": self.lost_share, "held_peak": self.held_peak,
                "evicted": self.evicted, "lower_bound": self.lower_bound}

    @classmethod
    def from_dict(cls, data: Any) -> ReferenceOutcome:
        """Rebuild an outcome from `to_dict()` output."""
        return cls(budget=int(data["budget"]), wanted=int(data["wanted"]),
                   lost=int(data["lost"]), held_peak=int(data["held_peak"]),
                   evicted=int(data["evicted"]), method=str(data.get("method", METHOD)),
                   lower_bound=(None if data.get("lower_bound") is None
                                else int(data["lower_bound"])))


# Event kinds at one instant: removals first, then reads (freeing what they read last), then
# new results, then the reads of a result at the very instant it became ready.
_END, _READ, _READY, _READ_OWN = 0, 1, 2, 3


def clairvoyant(demands: Iterable[Demand], budget: int, *,
                bound: bool = False) -> ReferenceOutcome:
    """Replay `demands` holding at most `budget` bytes of results, evicting the held results
    whose next read is furthest away (largest first among equals) whenever a new one would
    go over; see the module docstring for what is counted. With `bound`, also the LP lower
    bound on what the exact optimum loses (`lower_bound`; free when the budget holds every
    result, a min-cost flow otherwise)."""
    if budget < 0:
        raise ValueError(f"expected a budget of 0 bytes or more; got {budget}")
    items = list(demands)
    events: list[tuple[float, int, int, int]] = []  # (time, kind, item, read number)
    for n, demand in enumerate(items):
        events.append((demand.ready, _READY, n, 0))
        for k, when in enumerate(demand.reads):
            if when >= demand.ready and (demand.end is None or when <= demand.end):
                events.append((when, _READ_OWN if when == demand.ready else _READ, n, k))
        if demand.end is not None:
            events.append((demand.end, _END, n, 0))
    events.sort()
    held: dict[int, int] = {}  # item -> size
    next_read: dict[int, int] = {}  # item -> index of its next read in `reads`
    heap: list[tuple[float, int, int]] = []  # (-next read time, -size, item); stale allowed
    lost: set[int] = set()
    total = peak = evicted = 0

    def upcoming(n: int) -> float:
        demand, k = items[n], next_read[n]
        reads = demand.reads
        while k < len(reads) and (reads[k] < demand.ready
                                  or (demand.end is not None and reads[k] > demand.end)):
            k += 1
        next_read[n] = k
        return reads[k] if k < len(reads) else math.inf

    def drop(n: int) -> None:
        nonlocal total
        total -= held.pop(n)

    for _, kind, n, k in events:
        if kind == _END:
            if n in held:
                drop(n)
        elif kind in (_READ, _READ_OWN):
            if n not in held:
                lost.add(n)
                continue
            next_read[n] = k + 1
            after = upcoming(n)
            if after == math.inf:  # read for the last time: it can only cost memory now
                drop(n)
            elif held[n] > 0:
                heapq.heappush(heap, (-after, -held[n], n))
        else:
            demand = items[n]
            next_read[n] = 0
            first = upcoming(n)
            if first == math.inf or demand.size <= 0:
                if first != math.inf:  # free to keep: held, costs nothing
                    held[n] = 0
                continue
            held[n] = demand.size
            total += demand.size
            heapq.heappush(heap, (-first, -demand.size, n))
            while total > budget and heap:
                neg_when, _, victim = heapq.heappop(heap)
                if victim not in held or _next_time(items[victim], next_read[victim]) != -neg_when:
                    continue  # stale entry: read (or removed) since it was pushed
                drop(victim)
                evicted += 1
            peak = max(peak, total)
    wanted = sum(1 for n, demand in enumerate(items)
                 if n in lost or (demand.wanted and _has_reads(demand)))
    return ReferenceOutcome(budget=budget, wanted=wanted, lost=len(lost), held_peak=peak,
                            evicted=evicted,
                            lower_bound=lower_bound(items, budget) if bound else None)


def _next_time(demand: Demand, k: int) -> float:
    return demand.reads[k] if k < len(demand.reads) else math.inf


def _has_reads(demand: Demand) -> bool:
    return any(when >= demand.ready and (demand.end is None or when <= demand.end)
               for when in demand.reads)


def lower_bound(demands: Iterable[Demand], budget: int) -> int:
    """A lower bound on the results the exact optimum loses at `budget` bytes: the LP
    relaxation of "keep a set of results, each from when it is ready to its last read,
    never more than `budget` bytes at once", solved exactly as a min-cost flow (the shape of
    FOO, Berger, Beckmann and Harchol-Balter, SIGMETRICS 2018: time points in a line, the
    spare budget flowing along it, each result a bypass arc of its size whose every byte
    earns 1/size of a result kept).

    A result is lost when any read finds it gone, so keeping it means keeping it over its
    whole interval; a fraction kept counts as that fraction, which is why this is a bound
    and the greedy's losses are at or above it. Costs are rounded up (each result is worth
    a hair more), so the bound stays valid. When the results never need more than `budget`
    at once it is 0 without solving anything.
    """
    intervals: list[tuple[float, float, int]] = []
    for demand in demands:
        reads = [when for when in demand.reads
                 if when >= demand.ready and (demand.end is None or when <= demand.end)]
        if not reads or demand.size <= 0 or reads[-1] <= demand.ready:
            continue  # nothing to keep, or free to keep
        intervals.append((demand.ready, reads[-1], demand.size))
    if not intervals or _max_load(intervals) <= budget:
        return 0
    times = sorted({t for a, b, _ in intervals for t in (a, b)})
    node = {t: i for i, t in enumerate(times)}
    scale = float(1 << 40)
    flow = _MinCostFlow(len(times))
    for i in range(len(times) - 1):
        flow.add(i, i + 1, budget, 0)  # the spare budget: never more than all of it
    arcs = [flow.add(node[a], node[b], size, -math.ceil(scale / size))
            for a, b, size in intervals]
    flow.run(0, len(times) - 1, budget)
    kept = sum(flow.used(arc) * math.ceil(scale / size) for arc, (_, _, size)
               in zip(arcs, intervals)) / scale
    return max(0, math.ceil(len(intervals) - kept - 1e-9))


def _max_load(intervals: list[tuple[float, float, int]]) -> int:
    """The most bytes the half-open intervals `[start, end)` hold at once."""
    points = sorted([(a, 1, size) for a, _, size in intervals]
                    + [(b, 0, -size) for _, b, size in intervals])  # ends first at a tie
    load = most = 0
    for _, _, change in points:
        load += change
        most = max(most, load)
    return most


class _MinCostFlow:
    """Successive shortest paths with potentials, for a graph whose arcs all go forward in
    node order (so the first potentials come from one pass in that order)."""

    def __init__(self, nodes: int) -> None:
        self.nodes = nodes
        self.to: list[int] = []
        self.cap: list[int] = []
        self.cost: list[int] = []
        self.out: list[list[int]] = [[] for _ in range(nodes)]
        self.initial: list[int] = []

    def add(self, a: int, b: int, cap: int, cost: int) -> int:
        """An arc a -> b (a < b); returns its id (its reverse is id + 1)."""
        arc = len(self.to)
        for head, c, w in ((b, cap, cost), (a, 0, -cost)):
            self.to.append(head)
            self.cap.append(c)
            self.cost.append(w)
        self.out[a].append(arc)
        self.out[b].append(arc + 1)
        self.initial += [cap, 0]
        return arc

    def used(self, arc: int) -> int:
        return self.initial[arc] - self.cap[arc]

    def run(self, source: int, sink: int, amount: int) -> None:
        """Send `amount` from `source` to `sink` at least cost (stopping early once the
        cheapest path costs nothing: the rest goes along the zero-cost line)."""
        inf = float("inf")
        potential = [inf] * self.nodes
        potential[source] = 0
        for a in range(self.nodes):  # forward arcs only: one pass in node order
            if potential[a] == inf:
                continue
            for arc in self.out[a]:
                if arc % 2 == 0 and self.cap[arc] > 0:
                    b = self.to[arc]
                    potential[b] = min(potential[b], potential[a] + self.cost[arc])
        left = amount
        while left > 0:
            dist = [inf] * self.nodes
            via = [-1] * self.nodes
            dist[source] = 0
            heap = [(0.0, source)]
            while heap:
                d, a = heapq.heappop(heap)
                if d > dist[a]:
                    continue
                for arc in self.out[a]:
                    if self.cap[arc] <= 0:
                        continue
                    b = self.to[arc]
                    nd = d + self.cost[arc] + potential[a] - potential[b]
                    if nd < dist[b]:
                        dist[b], via[b] = nd, arc
                        heapq.heappush(heap, (nd, b))
            if dist[sink] == inf:
                return
            for i in range(self.nodes):
                if dist[i] < inf:
                    potential[i] += dist[i]
            if potential[sink] - potential[source] >= 0:
                return  # the cheapest path costs nothing: no result gains from more flow
            push, b = left, sink
            while b != source:
                arc = via[b]
                push = min(push, self.cap[arc])
                b = self.to[arc ^ 1]
            b = sink
            while b != source:
                arc = via[b]
                self.cap[arc] -= push
                self.cap[arc ^ 1] += push
                b = self.to[arc ^ 1]
            left -= push


def demands_from_trace(trace: Any, *, window: Optional[float] = None) -> list[Demand]:
    """The demands of a recorded trace (`memguard.tools.tune.trace.Trace`), counted as
    `memguard tune`'s replay counts them: a result is ready at its first write with a size
    (or its finish seen without a write), its reads are the trace's reads and reported
    misses from then on, a fresh insert of the same key starts a new result, and an
    application delete ends it. It is *wanted* when it is read twice, or once more than
    `window` seconds after it was ready (default: the tuner's delivery window plus one pass
    of the trace). The recorded run's own evictions are ignored: the reference decides.
    """
    from memguard.tools.tune.replay import DELIVERY_WINDOW

    window = DELIVERY_WINDOW + trace.check_interval if window is None else window
    open_: dict[tuple[int, str], dict[str, Any]] = {}  # (store, key) -> the result building
    done: list[dict[str, Any]] = []

    def close(slot: tuple[int, str], when: Optional[float]) -> None:
        current = open_.pop(slot, None)
        if current is not None and current["ready"] is not None:
            current["end"] = when
            done.append(current)

    for record in trace.records:
        kind = record[0]
        if kind == "E":
            continue
        now, slot = float(record[1]), (int(record[2]), str(record[3]))
        if kind == "i":
            close(slot, now)
        if kind in ("i", "w"):
            current = open_.setdefault(slot, {"ready": None, "size": 0, "reads": []})
            if record[4] is not None:
                if current["ready"] is None:
                    current["ready"] = now
                current["size"] = int(record[4])
        elif kind == "f":
            current = open_.setdefault(slot, {"ready": None, "size": 0, "reads": []})
            if current["ready"] is None:
                current["ready"] = now
            current["size"] = int(record[4])
        elif kind in ("r", "m"):
            reading = open_.get(slot)
            if reading is not None and reading["ready"] is not None:
                reading["reads"].append(now)
        elif kind == "d":
            close(slot, now)
    for slot in list(open_):
        close(slot, None)
    demands = []
    for n, result in enumerate(done):
        reads = tuple(result["reads"])
        wanted = len(reads) >= 2 or any(when - result["ready"] > window for when in reads)
        demands.append(Demand(key=n, ready=result["ready"], size=result["size"], reads=reads,
                              end=result["end"], wanted=wanted))
    return demands


def gap(share: Optional[float], reference: ReferenceOutcome) -> Optional[float]:
    """Points (0-100) between a lost share and the reference's (None: no share)."""
    return None if share is None else round((share - reference.lost_share) * 100, 1)


def reference_line(share: Optional[float], reference: ReferenceOutcome) -> str:
    """``clairvoyant reference (greedy Belady with sizes) at the same 180MB: 3 of 236 (1%),
    gap 27 points``."""
    from memguard.policy.units import format_size

    points = gap(share, reference)
    tail = "" if points is None else f", gap {points:g} points"
    return (f"clairvoyant reference ({reference.method}) at the same "
            f"{format_size(reference.budget)} of results: {reference.text()}{tail}")


__all__ = ["METHOD", "Demand", "ReferenceOutcome", "clairvoyant", "demands_from_trace", "gap",
           "lower_bound", "reference_line"]

