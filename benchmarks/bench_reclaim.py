"""Case 5, memory given back: result kind x allocator x method, a fresh process per cell.

Each cell runs ``python -m benchmarks.bench_reclaim --worker KIND METHOD MEGABYTES`` in a fresh
interpreter whose environment selects the allocator, so one cell's heap cannot flatter the
next. The worker notes its RSS (psutil, not memguard's probe), stores jobs in a managed store
until RSS has grown by the fill size, evicts every job memguard may evict
(``manager.evict_bytes``: the emergency path, which releases the result fields too), then:

- method ``gc``: ``gc.collect()`` only (what a process does without memguard's reclaim);
- method ``memguard``: ``memguard.memory.reclaim()``, a full ``gc.collect()`` and the detected
  allocator's own hook (glibc ``malloc_trim(0)``, jemalloc's ``arena.<all>.purge``).

The figure is the share of the growth given back: (filled RSS - RSS after) / (filled RSS - RSS
before), in percent. Kinds (10% of the jobs are kept ``running``, so memguard never evicts
them and about 90% is the most any cell can give back):

- ``text``: AI-response-like strings of 2-64 KiB (malloc's heap, under glibc's 128 KiB mmap
  threshold); every tenth job is running.
- ``json-interleaved``: parsed-JSON results (dicts and lists of short strings and numbers,
  every object under 512 bytes: pymalloc's arenas by default); every tenth job is running, so
  the survivors' small objects are allocated among the others' in the same arenas.
- ``json-clustered``: the same results and share of running jobs, but in each block of 1000
  jobs the 100 running ones are created first, together: their objects fill arenas of their own.

Allocators (the environment of the cell): ``pymalloc`` (the default), ``malloc``
(``PYTHONMALLOC=malloc``: small objects from glibc malloc), ``jemalloc`` (``LD_PRELOAD`` of
Debian's libjemalloc2: malloc is jemalloc, small objects still pymalloc's), ``jemalloc+malloc``
(both), and ``mimalloc`` (``PYTHONMALLOC=mimalloc``) where the interpreter has it (CPython
3.13+; probed by starting one). Cells whose allocator is unavailable are listed as skipped;
every cell checks that `memguard.memory.allocators.detect_allocator()` sees what its
environment asked for.

The full run also repeats the old reference cell (text, no running jobs, pymalloc, memguard)
for the suite's target. ``python -m benchmarks.bench_reclaim [--quick] [--megabytes N]``
prints the matrix as a Markdown table.
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
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from benchmarks import case, row, target

KINDS = ("text", "json-interleaved", "json-clustered", "text-results-only")
MATRIX_KINDS = KINDS[:3]
METHODS = ("gc", "memguard")
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
RUNNING_EVERY = 10  # one job in ten is kept running
BLOCK = 1000  # json-clustered: the running jobs of each block of this many come first

#: allocator -> (environment it needs, the (small_objects, malloc) detection must report)
ALLOCATORS: dict[str, tuple[dict[str, str], tuple[str, str]]] = {
    "pymalloc": ({}, ("pymalloc", "glibc")),
    "malloc": ({"PYTHONMALLOC": "malloc"}, ("malloc", "glibc")),
    "jemalloc": ({"LD_PRELOAD": JEMALLOC}, ("pymalloc", "jemalloc")),
    "jemalloc+malloc": ({"LD_PRELOAD": JEMALLOC, "PYTHONMALLOC": "malloc"},
                        ("malloc", "jemalloc")),
    "mimalloc": ({"PYTHONMALLOC": "mimalloc"}, ("mimalloc", "glibc")),
}
_SELECTING = ("PYTHONMALLOC", "LD_PRELOAD", "MALLOC_CONF", "PYTHONDEVMODE")


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


def _order(kind: str, start: int, count: int) -> list[tuple[int, bool]]:
    """(job number, running?) for jobs start..start+count, in the order they are created."""
    numbers = range(start, start + count)
    if kind == "text-results-only":
        return [(i, False) for i in numbers]
    if kind != "json-clustered":
        return [(i, i % RUNNING_EVERY == 0) for i in numbers]
    # Clustered: within each block, the running tenth is created first, together.
    running = [i for i in numbers if i % BLOCK < BLOCK // RUNNING_EVERY]
    finished = [i for i in numbers if i % BLOCK >= BLOCK // RUNNING_EVERY]
    return [(i, True) for i in running] + [(i, False) for i in finished]


def worker(kind: str, method: str, megabytes: int) -> dict[str, Any]:
    """Fill, evict, give back, and measure; returns the RSS figures (run in a fresh process)."""
    from memguard import MemoryManager, managed_store
    from memguard.memory.allocators import detect_allocator
    from memguard.memory.reclaim import reclaim

    rng = random.Random(1234)
    make: Callable[[random.Random, int], Any] = (
        _text_result if kind.startswith("text") else _json_result)
    manager = MemoryManager()

    @managed_store(name="bench_reclaim", manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        """A managed dict store with no bounds: everything goes on the explicit eviction."""

    store: Any = Jobs()
    gc.collect()
    before = _rss()
    goal = before + (megabytes << 20)
    added = running = 0
    step = BLOCK if kind == "json-clustered" else 64
    while _rss() < goal:
        for i, is_running in _order(kind, added, step):
            store[i] = {"status": "running" if is_running else "done", "result": make(rng, i)}
            running += is_running
        added += step
    filled = _rss()
    start = time.perf_counter()
    manager.evict_bytes(1 << 62)
    mechanism = "gc.collect()"
    if method == "memguard":
        mechanism = reclaim().mechanism
    else:
        gc.collect()
    seconds = time.perf_counter() - start
    after = _rss()
    found = detect_allocator()
    return {"kind": kind, "method": method, "jobs": added, "running": running,
            "left": len(store), "before": before, "filled": filled, "after": after,
            "seconds": seconds, "mechanism": mechanism, "allocator": found.to_dict(),
            "returned_percent": 100.0 * (filled - after) / max(1, filled - before)}


# -- running cells ---------------------------------------------------------------------------

def _root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _environment(allocator: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in _SELECTING}
    return {**clean, **ALLOCATORS[allocator][0]}


def unavailable(allocator: str) -> str:
    """Why `allocator` cannot run here ('' when it can): a missing library, or an interpreter
    that refuses to start with it."""
    env = ALLOCATORS[allocator][0]
    if "LD_PRELOAD" in env and not os.path.exists(env["LD_PRELOAD"]):
        return f"{env['LD_PRELOAD']} is not installed (Debian: apt-get install libjemalloc2)"
    done = subprocess.run([sys.executable, "-c", "pass"], env=_environment(allocator),
                          capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[0]
        return f"this interpreter does not start with it: {last}"
    return ""


def measure(kind: str, method: str, megabytes: int, allocator: str = "pymalloc") -> dict[
        str, Any]:
    """Run one `worker` in a fresh interpreter under `allocator` and return its figures.

    Raises RuntimeError when the worker fails or detects another allocator than asked for.
    """
    command = [sys.executable, "-m", "benchmarks.bench_reclaim", "--worker", kind, method,
               str(megabytes)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=_root(), timeout=600,
                          env=_environment(allocator), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{allocator}: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    seen = (result["allocator"]["small_objects"], result["allocator"]["malloc"])
    if seen != ALLOCATORS[allocator][1]:
        raise RuntimeError(f"{allocator}: the worker detected {seen}, expected "
                           f"{ALLOCATORS[allocator][1]}")
    result["allocator_name"] = allocator
    return result


def matrix(megabytes: int, allocators: Sequence[str] = tuple(ALLOCATORS),
           kinds: Sequence[str] = MATRIX_KINDS) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every (kind, allocator, method) cell: (results, {unavailable allocator: why})."""
    skipped = {name: why for name in allocators if (why := unavailable(name))}
    cells = [measure(kind, method, megabytes, name)
             for kind in kinds for name in allocators if name not in skipped
             for method in METHODS]
    return cells, skipped


def markdown(cells: Sequence[Mapping[str, Any]], skipped: Mapping[str, str]) -> str:
    """The matrix as a Markdown table: a row per (kind, method), a column per allocator."""
    names = [name for name in ALLOCATORS if any(c["allocator_name"] == name for c in cells)]
    by = {(c["kind"], c["method"], c["allocator_name"]): c for c in cells}
    lines = ["| kind | method | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for kind in dict.fromkeys(c["kind"] for c in cells):
        for method in METHODS:
            figures = [by.get((kind, method, name)) for name in names]
            lines.append(f"| {kind} | {method} | " + " | ".join(
                "" if f is None else f"{f['returned_percent']:.1f}%" for f in figures) + " |")
    for name, why in skipped.items():
        lines.append(f"\n{name}: skipped, {why}")
    return "\n".join(lines)


# -- the case -------------------------------------------------------------------------------

def run(quick: bool, *, megabytes: Optional[int] = None,
        allocators: Sequence[str] = tuple(ALLOCATORS)) -> dict[str, Any]:
    """Measure case 5: the matrix (each cell in its own subprocess) and the reference cell."""
    megabytes = megabytes or (40 if quick else 300)
    cells, skipped = matrix(megabytes, allocators)
    reference = measure("text-results-only", "memguard", megabytes, "pymalloc")
    by = {(c["kind"], c["method"], c["allocator_name"]): c for c in cells}
    rows = []
    for c in [*cells, reference]:
        peer = by.get((c["kind"], "gc", c["allocator_name"]))
        pct = c["returned_percent"]
        ratios = [] if c["method"] == "gc" or peer is None else [
            ("gc only", pct / peer["returned_percent"] if peer["returned_percent"] > 0
             else float("inf"))]
        ratios = [(name, value) for name, value in ratios if 0 < value < float("inf")]
        note = (f"{(c['filled'] - c['before']) >> 20} MiB grown, {c['jobs']} jobs "
                f"({c['running']} kept running), {c['mechanism']} in "
                f"{c['seconds'] * 1e3:.0f} ms")
        rows.append(row(f"{c['kind']}, {c['allocator_name']}: {c['method']}", pct, "%",
                        ratios=ratios, note=note))
    json_cells = [c for c in cells if c["kind"] == "json-interleaved" and
                  c["method"] == "memguard"]
    best = max(json_cells, key=lambda c: c["returned_percent"], default=None)
    targets = [
        target("memory given back, text results (memguard evict + reclaim)",
               reference["returned_percent"], ">=", 85.0, "%",
               detail="text results only, pymalloc over glibc"),
        target("parsed JSON, interleaved running jobs: best allocator with memguard",
               None if best is None else best["returned_percent"], ">=", 50.0, "%",
               detail="" if best is None else f"{best['allocator_name']}: "
               f"{best['allocator']['summary']}"),
    ]
    notes = [
        f"Fill: {megabytes} MiB of RSS growth per cell, each cell a fresh interpreter; one job "
        f"in {RUNNING_EVERY} is kept running (never evicted), so ~90% is the ceiling.",
        "Ratios are against the same cell with gc.collect() only after the same eviction.",
        *(f"{name}: skipped, {why}" for name, why in skipped.items()),
    ]
    return case("reclaim", "5. memory given back: result kind x allocator x method",
                rows=rows, targets=targets, notes=notes,
                params={"megabytes": megabytes, "running_every": RUNNING_EVERY,
                        "allocators": [a for a in allocators if a not in skipped],
                        "skipped": dict(skipped)})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``--worker KIND METHOD MEGABYTES``: one cell as JSON; otherwise the matrix as Markdown."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_reclaim")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "METHOD", "MEGABYTES"))
    parser.add_argument("--quick", action="store_true", help="40 MiB per cell, not 300")
    parser.add_argument("--megabytes", type=int, help="RSS growth per cell")
    args = parser.parse_args(argv)
    if args.worker:
        kind, method, megabytes = args.worker
        if kind not in KINDS or method not in METHODS:
            parser.error(f"kind in {KINDS}, method in {METHODS}")
        print(json.dumps(worker(kind, method, int(megabytes))))
        return 0
    megabytes = args.megabytes or (40 if args.quick else 300)
    start = time.perf_counter()
    cells, skipped = matrix(megabytes)
    print(f"Share of the RSS growth given back, {megabytes} MiB of results per cell, "
          f"one job in {RUNNING_EVERY} kept running ({time.perf_counter() - start:.0f} s):\n")
    print(markdown(cells, skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
