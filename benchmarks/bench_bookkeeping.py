"""Case 4, bookkeeping bytes per job: what a managed store costs beyond a dict of the same jobs.

The jobs and their keys are built before tracing starts, so `tracemalloc` sees only what each
container allocates for them: a plain dict, the managed store (its dict plus the side index:
LRU order, creation times, sizes), and the cachetools caches for comparison. The managed
store is measured after one pass, so every job has been weighed and its size is held.
The figure is (container - plain dict) / jobs. The store uses the real monotonic clock, so
each creation time is its own float object, as in production.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any, Callable, Optional

import cachetools

from benchmarks import case, row, target
from memguard import MemoryManager, managed_store


def make_jobs(n: int) -> list[tuple[str, dict[str, Any]]]:
    """`n` finished jobs and their id keys, allocated before tracing."""
    result = "x" * 200
    return [(f"job-{i:08d}", {"status": "done", "result": result}) for i in range(n)]


def traced_bytes(build: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes still allocated by `build()` once it returns (its result kept alive)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, built


def run(quick: bool, *, n_jobs: Optional[int] = None) -> dict[str, Any]:
    """Measure case 4: bytes per job over a plain dict, tracemalloc, 100k jobs."""
    n = n_jobs or 100_000
    jobs = make_jobs(n)
    manager = MemoryManager()

    @managed_store(max_age="20m", max_jobs=n * 2, name="bench_bookkeeping", manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        """A managed dict store, bounded the usual way (age and count)."""

    def plain() -> dict[str, Any]:
        return dict(jobs)

    def managed() -> Any:
        store = Jobs()
        for key, job in jobs:
            store[key] = job
        manager.run_cleanup()  # weighs anything not weighed yet and lays the first epoch
        return store

    def lru() -> Any:
        cache: cachetools.LRUCache[str, Any] = cachetools.LRUCache(maxsize=n * 2)
        for key, job in jobs:
            cache[key] = job
        return cache

    def ttl() -> Any:
        cache: cachetools.TTLCache[str, Any] = cachetools.TTLCache(maxsize=n * 2, ttl=1200)
        for key, job in jobs:
            cache[key] = job
        return cache

    plain_bytes, _ = traced_bytes(plain)
    measured = {}
    for name, build in (("managed store", managed), ("cachetools LRUCache", lru),
                        ("cachetools TTLCache", ttl)):
        total, built = traced_bytes(build)
        measured[name] = (total - plain_bytes) / n
        del built
    mine = measured["managed store"]
    rows = [
        row("plain dict (the jobs' own table)", plain_bytes / n, "bytes",
            note="total per job, the baseline subtracted below"),
        row("managed store", mine, "bytes",
            ratios=[(peer, mine / measured[peer]) for peer in ("cachetools LRUCache",
                                                               "cachetools TTLCache")],
            note="per job over the plain dict, after one pass"),
        row("cachetools LRUCache", measured["cachetools LRUCache"], "bytes",
            note="per job over the plain dict"),
        row("cachetools TTLCache", measured["cachetools TTLCache"], "bytes",
            note="per job over the plain dict"),
    ]
    targets = [target("bookkeeping bytes per job (managed store - dict)", mine, "<=", 200,
                      "bytes", detail=f"{n} jobs, tracemalloc")]
    notes = ["cachebox is left out: its tables live in Rust allocations tracemalloc does not see."]
    return case("bookkeeping", "4. bookkeeping bytes per job", rows=rows, targets=targets,
                notes=notes, params={"jobs": n})
