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
from typing import Any, Optional

import cachetools

from benchmarks import Settings, TimeFunc, case, compare, ratio, timeit_func
from benchmarks import timing_row as _timing_row
from memguard import MemoryManager, managed_store

try:  # optional peer (the `bench` extra installs it)
    import cachebox
except ImportError:  # pragma: no cover - depends on the environment
    cachebox = None

RESULT = "x" * 200
FLOOR = "OrderedDict + popitem(last=False)"
NEW_JOB = "{'status': 'done', 'result': RESULT}"


def _inserts(obj: Any, start: int, *, evict_oldest: bool = False) -> TimeFunc:
    """Time storing a new job under a new key into `obj` (and popping its oldest, if asked)."""
    namespace = {"s": obj, "c": itertools.count(start), "RESULT": RESULT}
    stmt = f"s[next(c)] = {NEW_JOB}"
    if evict_oldest:
        stmt += "\ns.popitem(last=False)"
    return timeit_func(stmt, namespace)


def build(capacity: int) -> dict[str, TimeFunc]:
    """The contenders, each filled to `capacity`, as time functions by display name."""
    manager = MemoryManager()

    @managed_store(max_jobs=capacity, name="bench_insert", manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        """A managed dict store bounded by count."""

    @managed_store(max_jobs=capacity, size=lambda job: 0, name="bench_insert_sized",
                   manager=manager)
    class SizedJobs(dict):  # type: ignore[type-arg]
        """The same store with a constant size function: the insert minus weighing."""

    def filled(obj: Any) -> Any:
        for i in range(capacity):
            obj[i] = {"status": "done", "result": RESULT}
        return obj

    start = capacity
    funcs: dict[str, TimeFunc] = {
        FLOOR: _inserts(filled(OrderedDict()), start, evict_oldest=True),
        "managed store (max_jobs)": _inserts(filled(Jobs()), start),
        "managed store (max_jobs, size=0)": _inserts(filled(SizedJobs()), start),
        "cachetools LRUCache": _inserts(filled(cachetools.LRUCache(capacity)), start),
        "cachetools TTLCache": _inserts(filled(cachetools.TTLCache(capacity, ttl=1200)), start),
    }
    if cachebox is not None:
        funcs["cachebox LRUCache"] = _inserts(filled(cachebox.LRUCache(capacity)), start)
        funcs["cachebox TTLCache"] = _inserts(filled(cachebox.TTLCache(capacity, 1200)), start)
    return funcs


def run(quick: bool, *, settings: Optional[Settings] = None,
        capacity: Optional[int] = None) -> dict[str, Any]:
    """Measure case 2: per insert, each evicting one job."""
    settings = settings or Settings.for_mode(quick)
    capacity = capacity or 1_000
    funcs = build(capacity)
    t = compare(funcs, settings, group="insert")
    plain, lru, ttl = t[FLOOR], t["cachetools LRUCache"], t["cachetools TTLCache"]
    cb = [t[name] for name in ("cachebox LRUCache", "cachebox TTLCache") if name in t]
    store, sized = t["managed store (max_jobs)"], t["managed store (max_jobs, size=0)"]
    rows = [
        _timing_row(plain),
        _timing_row(store, [lru, ttl, plain, *cb]),
        _timing_row(sized, [lru, ttl, plain, *cb],
                    note="size=lambda job: 0 skips the default deep-size estimate"),
        _timing_row(lru, [plain]),
        _timing_row(ttl, [plain]),
        *(_timing_row(timing, [plain]) for timing in cb),
    ]
    notes = [
        "No target is set for inserts (issue 7); the ratios are reported for the record: "
        f"{ratio(store, lru):.1f}x cachetools LRUCache.",
        f"capacity {capacity}; integer keys; each insert stores a fresh "
        "{'status': 'done', 'result': 200 chars} dict, created inside the timed statement "
        "for every contender.",
    ]
    return case("insert", "2. insert at capacity (per insert, each evicting one job)",
                rows=rows, notes=notes, params={"capacity": capacity})
