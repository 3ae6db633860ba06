"""Case 5, memory given back: how much of a fill of results returns to the OS once evicted.

Each measurement runs in a fresh subprocess (``python -m benchmarks.bench_reclaim --worker
...``), so one run's heap cannot flatter the next. The worker notes its RSS (psutil, not
memguard's own probe), stores finished jobs ``{"status": "done", "result": ...}`` until RSS
has grown by the fill size, then gives them back one of three ways:

- ``memguard``: a managed store; ``manager.evict_bytes()`` evicts everything (the emergency
  path: the result fields are released too), then ``memguard.memory.reclaim()`` (full
  ``gc.collect()`` and glibc's ``malloc_trim(0)``);
- ``cachetools``: the same jobs in a ``cachetools.TTLCache``; every key deleted, then
  ``gc.collect()`` (what an application does without memguard);
- ``cachetools + trim``: the same, then ``memguard.memory.reclaim()``, to show how much of
  the difference is the trim (which any process can call) rather than the eviction.

The figure is (filled RSS - RSS after) / (filled RSS - RSS before), in percent. Shapes:
``text`` (AI-response-like strings of 2-64 KiB; under glibc's 128 KiB mmap threshold, so they
live in the malloc heap) and ``json`` (parsed-JSON trees: dicts and lists of small strings
and numbers, i.e. pymalloc's small-object arenas). Variants: ``results only`` (the case as
stated) and ``with survivors`` (each job also leaves 1 KiB of other live data allocated
between the results, as the rest of an application would: freed memory then sits between
live blocks). In the full run the fill is also repeated from 4 threads, as a threaded
server creates results in per-thread malloc arenas.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

from benchmarks import case, row, target

CONTENDERS = ("memguard", "cachetools", "cachetools + trim")
SHAPES = ("text", "json")
SURVIVOR = 1024


# -- the worker (runs in the subprocess) -----------------------------------------------------

def _text_result(rng: random.Random, i: int) -> str:
    size = rng.randint(2_000, 64_000)
    return (f"{i:08d}" * (size // 8 + 1))[:size]


def _json_result(rng: random.Random, i: int) -> dict[str, Any]:
    return {"id": i, "model": "gpt", "usage": {"prompt": rng.randint(1, 999), "completion": 42},
            "items": [{"name": f"item-{i}-{j}", "score": j * 0.5 + rng.random(),
                       "tags": ["a", f"t{j}"], "ok": j % 2 == 0} for j in range(40)]}


def _rss() -> int:
    import psutil  # type: ignore[import-untyped, unused-ignore]

    return int(psutil.Process().memory_info().rss)


def worker(contender: str, shape: str, megabytes: int, threads: int, survivors: bool) -> dict[
        str, Any]:
    """Fill, give back, and measure; returns the RSS figures (run in a fresh process)."""
    import cachetools

    from memguard import MemoryManager, managed_store
    from memguard.memory import reclaim

    rng = random.Random(1234)
    make: Callable[[random.Random, int], Any] = _text_result if shape == "text" else _json_result
    manager = MemoryManager()

    @managed_store(name="bench_reclaim", manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        """A managed dict store with no bounds: everything goes on the explicit eviction."""

    store: Any = Jobs() if contender == "memguard" else cachetools.TTLCache(1 << 40, 3600)
    kept: list[str] = []

    def add(i: int) -> None:
        store[i] = {"status": "done", "result": make(rng, i)}
        if survivors:
            kept.append(f"{i:08d}" * (SURVIVOR // 8))

    gc.collect()
    before = _rss()
    goal = before + (megabytes << 20)
    added = 0
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    while _rss() < goal:
        batch = range(added, added + 64)
        if pool is not None:
            list(pool.map(add, batch))
        else:
            for i in batch:
                add(i)
        added += len(batch)
    filled = _rss()
    start = time.perf_counter()
    if contender == "memguard":
        manager.evict_bytes(1 << 62)
        reclaim()
    else:
        for key in list(store):
            del store[key]
        if contender == "cachetools + trim":
            reclaim()
        else:
            gc.collect()
    seconds = time.perf_counter() - start
    after = _rss()
    if pool is not None:
        pool.shutdown()
    return {"contender": contender, "shape": shape, "threads": threads, "survivors": survivors,
            "jobs": added, "left": len(store), "before": before, "filled": filled,
            "after": after, "seconds": seconds,
            "returned_percent": 100.0 * (filled - after) / max(1, filled - before)}


def measure(contender: str, shape: str, megabytes: int, *, threads: int = 1,
            survivors: bool = False) -> dict[str, Any]:
    """Run one `worker` in a fresh interpreter and return its figures."""
    command = [sys.executable, "-m", "benchmarks.bench_reclaim", "--worker", contender, shape,
               str(megabytes), str(threads), str(int(survivors))]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=600,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the case -------------------------------------------------------------------------------

def run(quick: bool, *, megabytes: Optional[int] = None,
        threads: Optional[Sequence[int]] = None) -> dict[str, Any]:
    """Measure case 5 (each figure in its own subprocess)."""
    megabytes = megabytes or (100 if quick else 200)
    thread_counts = tuple(threads or ((1,) if quick else (1, 4)))
    rows = []
    text_figures = []
    for n_threads in thread_counts:
        for survivors in (False, True):
            for shape in SHAPES:
                got = {name: measure(name, shape, megabytes, threads=n_threads,
                                     survivors=survivors) for name in CONTENDERS}
                variant = (f"{shape}, {'with survivors' if survivors else 'results only'}"
                           + (f", {n_threads} threads" if n_threads > 1 else ""))
                base = got["cachetools"]["returned_percent"]
                for name in CONTENDERS:
                    figures = got[name]
                    pct = figures["returned_percent"]
                    ratios = [] if name == "cachetools" else [
                        ("cachetools", pct / base if base > 0 else float("inf"))]
                    note = (f"{(figures['filled'] - figures['before']) >> 20} MiB grown, "
                            f"{figures['jobs']} jobs, given back in "
                            f"{figures['seconds'] * 1e3:.0f} ms")
                    rows.append(row(f"{variant}: {name}", pct, "%", ratios=ratios, note=note))
                if shape == "text" and not survivors:
                    text_figures.append(got["memguard"]["returned_percent"])
    worst = min(text_figures)
    targets = [target("memory given back, text results (memguard evict + reclaim)", worst, ">=",
                      85.0, "%", detail="lowest over the fill variants measured, results only")]
    notes = [
        f"Fill: {megabytes} MiB of RSS growth per run, each run a fresh interpreter.",
        "Ratios are against deleting from a cachetools TTLCache + gc.collect(), same fill.",
        "'with survivors': 1 KiB of other live data per job, allocated between the results; "
        "the pages it sits on cannot be returned by anyone, which bounds every contender.",
    ]
    return case("reclaim", "5. memory given back to the OS after evicting every result",
                rows=rows, targets=targets, notes=notes,
                params={"megabytes": megabytes, "threads": list(thread_counts),
                        "survivor_bytes": SURVIVOR})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``--worker CONTENDER SHAPE MEGABYTES THREADS SURVIVORS``: one measurement, as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_reclaim")
    parser.add_argument("--worker", nargs=5, required=True,
                        metavar=("CONTENDER", "SHAPE", "MEGABYTES", "THREADS", "SURVIVORS"))
    args = parser.parse_args(argv)
    contender, shape, megabytes, n_threads, survivors = args.worker
    if contender not in CONTENDERS or shape not in SHAPES:
        parser.error(f"contender in {CONTENDERS}, shape in {SHAPES}")
    result = worker(contender, shape, int(megabytes), int(n_threads), survivors == "1")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
