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

    @property
    def lost_share(self) -> float:
        return self.lost / self.wanted if self.wanted else 0.0

    def text(self) -> str:
        """``3 of 236 (1%)``."""
        return f"{self.lost} of {self.wanted} ({self.lost_share:.0%})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the fields and the share."""
        return {"method": self.method, "budget": self.budget, "wanted": self.wanted,
                "lost": self.lost, "lost_share": self.lost_share, "held_peak": self.held_peak,
                "evicted": self.evicted}

    @classmethod
    def from_dict(cls, data: Any) -> ReferenceOutcome:
        """Rebuild an outcome from `to_dict()` output."""
        return cls(budget=int(data["budget"]), wanted=int(data["wanted"]),
                   lost=int(data["lost"]), held_peak=int(data["held_peak"]),
                   evicted=int(data["evicted"]), method=str(data.get("method", METHOD)))


# Event kinds at one instant: removals first, then reads (freeing what they read last), then
# new results, then the reads of a result at the very instant it became ready.
_END, _READ, _READY, _READ_OWN = 0, 1, 2, 3


def clairvoyant(demands: Iterable[Demand], budget: int) -> ReferenceOutcome:
    """Replay `demands` holding at most `budget` bytes of results, evicting the held results
    whose next read is furthest away (largest first among equals) whenever a new one would
    go over; see the module docstring for what is counted."""
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
                            evicted=evicted)


def _next_time(demand: Demand, k: int) -> float:
    return demand.reads[k] if k < len(demand.reads) else math.inf


def _has_reads(demand: Demand) -> bool:
    return any(when >= demand.ready and (demand.end is None or when <= demand.end)
               for when in demand.reads)


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
            f"{format_size(reference.budget)} of results: {reference.text()} lost{tail}")


__all__ = ["METHOD", "Demand", "ReferenceOutcome", "clairvoyant", "demands_from_trace", "gap",
           "reference_line"]

