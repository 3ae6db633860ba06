"""Case 4, bookkeeping bytes per job: what a managed store costs beyond a dict of the same jobs.

The jobs and their keys are built before tracing starts, so `tracemalloc` sees only what each
container allocates for them: a plain dict, the managed store (its dict plus the side index:
LRU order, creation times, sizes), and the cachetools caches for comparison. The managed
store is measured after one pass, so every job has been weighed and its size is held.
The figure is (container - plain dict) / jobs. The store uses the real monotonic clock, so
each creation time is its own float object, as in production.

The store is measured in three states: after one pass (at rest), with every job read since
that pass (the read set holds them all until the next write or pass drains it), and with one
job in ten running (known active, unweighed, in the recheck rotation). Each state is also
measured by RSS in a fresh interpreter (``python -m benchmarks.bench_bookkeeping --rss
STATE``): RSS growth of the store minus that of a plain dict of the same jobs, built in the
same process, so allocator overhead and fragmentation count too.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import cachetools
import psutil

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


#: The states a store is measured in (see the module docstring).
STATES = ("after one pass", "every job read since", "one job in ten running")


def store_builder(jobs: list[tuple[str, dict[str, Any]]], state: str) -> Callable[[], Any]:
    """A function that builds a managed store of `jobs` in `state` and returns it."""
    manager = MemoryManager()
    n = len(jobs)

    @managed_store(max_age="20m", max_jobs=n * 2, name="bench_bookkeeping", manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        """A managed dict store, bounded the usual way (age and count)."""

    def build() -> Any:
        store = Jobs()
        for position, (key, job) in enumerate(jobs):
            if state == STATES[2] and position % 10 == 0:
                job = {**job, "status": "running"}
            store[key] = job
        manager.run_cleanup()  # weighs anything not weighed yet and lays the first epoch
        if state == STATES[1]:
            for key, _ in jobs:
                store[key]  # a read, recorded until the next drain
        return store

    return build


def rss_worker(state: str, n: int) -> float:
    """In this (fresh) interpreter: RSS bytes per job of the store in `state` over a dict."""
    jobs = make_jobs(n)
    process = psutil.Process()
    gc.collect()
    start = process.memory_info().rss
    plain = dict(jobs)
    gc.collect()
    plain_bytes = process.memory_info().rss - start
    build = store_builder(jobs, state)
    start = process.memory_info().rss
    store = build()
    gc.collect()
    store_bytes = process.memory_info().rss - start
    del plain, store
    return (store_bytes - plain_bytes) / n


def rss_in_fresh_interpreter(state: str, n: int) -> Optional[float]:
    """`rss_worker` in a subprocess; None (and the reason on stderr) if it failed."""
    command = [sys.executable, "-m", "benchmarks.bench_bookkeeping", "--rss", state, str(n)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return None
    return float(json.loads(done.stdout.strip().splitlines()[-1]))


def run(quick: bool, *, n_jobs: Optional[int] = None) -> dict[str, Any]:
    """Measure case 4: bytes per job over a plain dict, tracemalloc and RSS, 100k jobs."""
    n = n_jobs or 100_000
    jobs = make_jobs(n)

    def plain() -> dict[str, Any]:
        return dict(jobs)

    managed = store_builder(jobs, STATES[0])

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
    for state in STATES[1:]:
        total, built = traced_bytes(store_builder(jobs, state))
        measured[f"managed store, {state}"] = (total - plain_bytes) / n
        del built
    rss = {state: rss_in_fresh_interpreter(state, n) for state in STATES}
    mine = measured["managed store"]
    rows = [
        row("plain dict (the jobs' own table)", plain_bytes / n, "bytes",
            note="total per job, the baseline subtracted below"),
        row("managed store", mine, "bytes",
            ratios=[(peer, mine / measured[peer]) for peer in ("cachetools LRUCache",
                                                               "cachetools TTLCache")],
            note="per job over the plain dict, after one pass"),
        *(row(f"managed store, {state}", measured[f"managed store, {state}"], "bytes",
              note="per job over the plain dict, tracemalloc") for state in STATES[1:]),
        *(row(f"managed store, {state}, by RSS", figure, "bytes",
              note="per job over a plain dict, RSS growth in a fresh interpreter")
          for state, figure in rss.items() if figure is not None),
        row("cachetools LRUCache", measured["cachetools LRUCache"], "bytes",
            note="per job over the plain dict"),
        row("cachetools TTLCache", measured["cachetools TTLCache"], "bytes",
            note="per job over the plain dict"),
    ]
    targets = [target("bookkeeping bytes per job (managed store - dict)", mine, "<=", 200,
                      "bytes", detail=f"{n} jobs, tracemalloc")]
    targets += [target(f"bookkeeping bytes per job, {state}, tracemalloc",
                       measured[f"managed store, {state}"], "<=", 200, "bytes",
                       detail=f"{n} jobs") for state in STATES[1:]]
    targets += [target(f"bookkeeping bytes per job, {state}, by RSS", figure, "<=", 200,
                       "bytes", detail=f"{n} jobs, fresh interpreter")
                for state, figure in rss.items()]
    notes = ["cachebox is left out: its tables live in Rust allocations tracemalloc does not see."]
    return case("bookkeeping", "4. bookkeeping bytes per job", rows=rows, targets=targets,
                notes=notes, params={"jobs": n})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``--rss STATE JOBS``: one state's RSS bytes per job, as JSON on stdout."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_bookkeeping")
    parser.add_argument("--rss", nargs=2, metavar=("STATE", "JOBS"), required=True)
    args = parser.parse_args(argv)
    state, n = args.rss[0], int(args.rss[1])
    if state not in STATES:
        parser.error(f"STATE must be one of {', '.join(map(repr, STATES))}, not {state!r}")
    print(json.dumps(rss_worker(state, n)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
