"""Case 2, insert at capacity: every insert of a new job evicts one, in each contender.

Each contender is filled to `capacity` first; the timed statement then stores a new job
(a fresh small dict, as a web handler would create) under a new key, so a bounded store has
to evict one job per insert. The managed store is bounded by `max_jobs` (enforced on insert,
DESIGN section 3); the caches by `maxsize`; the floor is an `OrderedDict` popping its
oldest item by hand (the least work any bounded store can do; a plain dict cannot do it in
O(1): `next(iter(d))` walks the deleted slots at its front).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Optional

import cachetools

from benchmarks import Settings, TimeFunc, Timing, case, compare, ratio, target, timeit_func
from benchmarks import timing_row as _timing_row
from memguard import MemoryManager, managed_store
from memguard.index.estimate import estimate_size

cachebox: Any
try:  # optional peer (the `bench` extra installs it)
    import cachebox
except ImportError:  # pragma: no cover - depends on the environment
    cachebox = None

RESULT = "x" * 200
FLOOR = "OrderedDict + popitem(last=False)"
STORE = "managed store (max_jobs)"
SIZED = "managed store (max_jobs, size=0)"
ACTIVE = "managed store (max_jobs, 90% of jobs active)"
LARGEST = 'managed store (max_jobs, order="largest")'
BYTES = "managed store (max_bytes, default size estimate)"
BELOW = "managed store, below its bound (insert + del)"
LRU_BELOW = "cachetools LRUCache, below its bound (insert + del)"
CAPACITIES = (1_000, 100_000)
NEW_JOB = "{'status': 'done', 'result': RESULT}"
#: Results of 97 lengths (shared strings, so no insert pays for building one): the
#: `largest` order has sizes to sort, and each insert evicts the largest job stored.
SIZED_RESULTS = tuple("x" * (64 + 37 * (i * 59 % 97)) for i in range(97))
SIZED_JOB = "{'status': 'done', 'result': SIZED_RESULTS[k % 97]}"


def _inserts(obj: Any, start: int, *, evict_oldest: bool = False,
             sized: bool = False, keep: int = 0) -> TimeFunc:
    """Time storing a new job under a new key into `obj` (and popping its oldest, if asked;
    with `sized`, a result of one of 97 lengths; with `keep`, deleting the key stored `keep`
    inserts ago, so the contender stays below its bound and never evicts)."""
    namespace = {"s": obj, "c": itertools.count(start), "RESULT": RESULT,
                 "SIZED_RESULTS": SIZED_RESULTS}
    stmt = f"k = next(c)\ns[k] = {SIZED_JOB}" if sized else f"s[next(c)] = {NEW_JOB}"
    if evict_oldest:
        stmt += "\ns.popitem(last=False)"
    if keep:
        stmt = f"k = next(c)\ns[k] = {NEW_JOB}\ndel s[k - {keep}]"
    return timeit_func(stmt, namespace)


def build(capacity: int) -> dict[str, TimeFunc]:
    """The contenders, filled to `capacity` then churned once over, as time functions.

    The churn (`capacity` more inserts, each evicting, untimed) brings every contender to
    the steady state of a store that has turned over all its jobs, which is what a server
    running for hours sees; names carry the capacity.
    """
    manager = MemoryManager()

    @managed_store(max_jobs=capacity, name=f"bench_insert_{capacity}", manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        """A managed dict store bounded by count."""

    @managed_store(max_jobs=capacity, size=lambda job: 0, name=f"bench_insert_{capacity}_sized",
                   manager=manager)
    class SizedJobs(dict):  # type: ignore[type-arg]
        """The same store with a constant size function: the insert minus weighing."""

    @managed_store(max_jobs=capacity, name=f"bench_insert_{capacity}_active", manager=manager)
    class BusyJobs(dict):  # type: ignore[type-arg]
        """A store whose jobs are 90% active (running, never evictable), least recent first."""

    @managed_store(max_jobs=capacity, order="largest", name=f"bench_insert_{capacity}_largest",
                   manager=manager)
    class LargestJobs(dict):  # type: ignore[type-arg]
        """A store bounded by count that evicts its largest job first (issue 13)."""

    job_bytes = estimate_size({"status": "done", "result": RESULT})

    @managed_store(max_bytes=capacity * job_bytes, name=f"bench_insert_{capacity}_bytes",
                   manager=manager)
    class ByteJobs(dict):  # type: ignore[type-arg]
        """A store bounded by bytes alone: every insert weighs its job and evicts one."""

    @managed_store(max_jobs=capacity, name=f"bench_insert_{capacity}_below", manager=manager)
    class RoomyJobs(dict):  # type: ignore[type-arg]
        """A store kept at half its bound: inserts never evict."""

    def below(obj: Any) -> Any:
        for k in range(capacity // 2):
            obj[k] = {"status": "done", "result": RESULT}
        return obj

    def largest() -> Any:
        jobs = LargestJobs()
        for k in range(2 * capacity):
            jobs[k] = {"status": "done", "result": SIZED_RESULTS[k % 97]}
        return jobs

    def busy() -> Any:
        jobs = BusyJobs()
        active = capacity * 9 // 10
        for i in range(active):
            jobs[-1 - i] = {"status": "running", "result": None}
        return churned(jobs)  # the done tenth then turns over: each insert evicts one

    def churned(obj: Any, *, evict_oldest: bool = False) -> Any:
        for i in range(2 * capacity):
            obj[i] = {"status": "done", "result": RESULT}
            if evict_oldest and i >= capacity:
                obj.popitem(last=False)
        return obj

    start = 2 * capacity
    contenders: dict[str, TimeFunc] = {
        FLOOR: _inserts(churned(OrderedDict(), evict_oldest=True), start, evict_oldest=True),
        STORE: _inserts(churned(Jobs()), start),
        SIZED: _inserts(churned(SizedJobs()), start),
        ACTIVE: _inserts(busy(), start),
        LARGEST: _inserts(largest(), start, sized=True),
        BYTES: _inserts(churned(ByteJobs()), start),
        BELOW: _inserts(below(RoomyJobs()), capacity // 2, keep=capacity // 2),
        LRU_BELOW: _inserts(below(cachetools.LRUCache(capacity)), capacity // 2,
                            keep=capacity // 2),
        "cachetools LRUCache": _inserts(churned(cachetools.LRUCache(capacity)), start),
        "cachetools TTLCache": _inserts(churned(cachetools.TTLCache(capacity, ttl=1200)), start),
    }
    if cachebox is not None:
        contenders["cachebox LRUCache"] = _inserts(churned(cachebox.LRUCache(capacity)), start)
        contenders["cachebox TTLCache"] = _inserts(churned(cachebox.TTLCache(capacity, 1200)),
                                                   start)
    return {f"{name}, capacity {capacity:.0e}": func for name, func in contenders.items()}


def run(quick: bool, *, settings: Optional[Settings] = None,
        capacities: Sequence[int] = CAPACITIES) -> dict[str, Any]:
    """Measure case 2: per insert, each evicting one job, at each capacity."""
    settings = settings or Settings.for_mode(quick)
    funcs: dict[str, TimeFunc] = {}
    for capacity in capacities:
        funcs.update(build(capacity))
    t = compare(funcs, settings, group="insert")
    rows = []
    notes = []
    first = capacities[0]
    for capacity in capacities:
        def at(name: str, capacity: int = capacity) -> Timing:
            return t[f"{name}, capacity {capacity:.0e}"]

        plain, lru, ttl = at(FLOOR), at("cachetools LRUCache"), at("cachetools TTLCache")
        cb = [at(name) for name in ("cachebox LRUCache", "cachebox TTLCache")
              if f"{name}, capacity {capacity:.0e}" in t]
        store, sized, active, biggest = at(STORE), at(SIZED), at(ACTIVE), at(LARGEST)
        by_bytes, below, lru_below = at(BYTES), at(BELOW), at(LRU_BELOW)
        scale = [] if capacity == first else [at(STORE, first)]
        rows += [
            _timing_row(plain),
            _timing_row(store, [lru, ttl, plain, *cb, *scale]),
            _timing_row(sized, [lru, ttl, plain, *cb],
                        note="size=lambda job: 0 skips the default deep-size estimate"),
            _timing_row(active, [store, plain, *([] if capacity == first else [at(ACTIVE, first)])],
                        note="90% of the jobs are running (never evictable), least recent "
                             "first: amortized O(1) per eviction, not O(active jobs)"),
            _timing_row(biggest, [store, lru, *([] if capacity == first
                                                else [at(LARGEST, first)])],
                        note="results of 97 lengths; each insert evicts the largest job"),
            _timing_row(by_bytes, [lru, store], note="bounded by bytes alone: each insert "
                        "weighs its job (the default estimate) and evicts one"),
            _timing_row(below, [lru_below], note="kept at half its bound: the insert and a "
                        "del of an older job, nothing evicted"),
            _timing_row(lru_below),
            _timing_row(lru, [plain]),
            _timing_row(ttl, [plain]),
            *(_timing_row(timing, [plain]) for timing in cb),
        ]
        notes.append(f"capacity {capacity:.0e}: {ratio(store, lru):.1f}x cachetools LRUCache, "
                     f"{ratio(store, ttl):.1f}x cachetools TTLCache per insert.")
    last = capacities[-1]
    big, small = t[f"{LARGEST}, capacity {last:.0e}"], t[f"{LARGEST}, capacity {first:.0e}"]
    targets = [target(f'order="largest": insert at the bound, {last:.0e} jobs vs {first:.0e}',
                      ratio(big, small), "<=", 3.0, "x",
                      detail=f"{big.best * 1e6:.1f} us vs {small.best * 1e6:.1f} us")]
    for subject, peer, limit, what in (
            (STORE, "cachetools LRUCache", 3.0, "insert into a full store, max_jobs"),
            (BYTES, "cachetools LRUCache", 6.0,
             "insert into a full store, max_bytes and the default estimate"),
            (BELOW, LRU_BELOW, 2.0, "insert below the bound (with a del each)")):
        mine, theirs = t[f"{subject}, capacity {first:.0e}"], t[f"{peer}, capacity {first:.0e}"]
        targets.append(target(f"{what}, capacity {first:.0e}, vs {peer}", ratio(mine, theirs),
                              "<=", limit, "x",
                              detail=f"{mine.best * 1e6:.2f} us vs {theirs.best * 1e6:.2f} us"))
    notes += [
        "Every contender is filled, then churned once over (capacity more inserts, each "
        "evicting) before timing: the steady state of a long-running store.",
        "Integer keys; each insert stores a fresh {'status': 'done', 'result': 200 chars} dict, "
        "created inside the timed statement for every contender.",
    ]
    return case("insert", "2. insert at capacity (per insert, each evicting one job)",
                rows=rows, targets=targets, notes=notes, params={"capacities": list(capacities)})
