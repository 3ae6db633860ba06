"""Case 3, pipeline pass cost at 1e3 .. 1e6 jobs, evicting nothing and evicting 1%.

Each size gets its own managed store (`max_age`, on a `MemoryManager` with a `FakeClock`),
filled in 100 batches, batch *b* created at simulated second *b*. A pass at a time when
no batch is past `max_age` evicts nothing; moving the clock so that exactly the oldest batch
is past it makes the next pass evict 1% of the jobs. After each such pass (outside the
timing) a fresh batch is stored, so the store stays at its size and the next sample has
another 1% to evict.

The peer is cachetools' `TTLCache.expire()`, filled and aged the same way with the same
clock: the cheapest "drop what has expired" a Python cache offers (O(expired), like a pass
should be). The scaling target compares each size with the 1e3 store, in the same run.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import Any, Callable, Optional

import cachetools

from benchmarks import Settings, TimeFunc, case, compare, ratio, row, target, timing_row
from memguard import MemoryManager, managed_store
from memguard.testing import FakeClock

SIZES = (1_000, 10_000, 100_000, 1_000_000)
BATCHES = 100
MAX_AGE = 1_000.0
RESULT = "x" * 200
TURNOVER = 30
FRESH = "evict 0, fresh"
TURNED_OVER = "evict 0, after turnover"
ONE_PERCENT = "evict 1%"
FINISHED = "evict 0, after jobs finished"
RUNNING = "evict 0, 10% running"


def _job() -> dict[str, Any]:
    return {"status": "done", "result": RESULT}


class Aged:
    """A store (or cache) of `n` jobs in 100 batches of known creation times, and its clock."""

    def __init__(self, n: int, *, store: Any, clock: FakeClock,
                 run_pass: Callable[[], int]) -> None:
        self.n = n
        self.batch = max(1, n // BATCHES)
        self.store = store
        self.clock = clock
        self.run_pass = run_pass
        self.batches: deque[float] = deque()
        self.next_key = 0
        self.evicted: list[int] = []
        for b in range(BATCHES):
            self.clock.now = float(b)
            self.add_batch()

    def add_batch(self) -> None:
        """Store one batch of new jobs, created now."""
        store, start = self.store, self.next_key
        for key in range(start, start + self.batch):
            store[key] = _job()
        self.next_key = start + self.batch
        self.batches.append(self.clock.now)

    def run_lifecycle(self) -> None:
        """Rewrite every job as running (a status update), finish it, and run one pass.

        This is how jobs really arrive: stored while active, weighed by the first pass
        after they finish. A cache has nothing to weigh; only the pass runs.
        """
        store = self.store
        if isinstance(store, dict):
            for key in list(dict.keys(store)):
                job = dict.__getitem__(store, key)
                job["status"] = "running"
                store[key] = job
                job["status"] = "done"
        self.run_pass()

    def keep_running(self, every: int = 10) -> None:
        """Rewrite every `every`-th job as running and leave it so: jobs stored while active,
        which a pass must neither evict nor walk over again at each pass."""
        store = self.store
        if isinstance(store, dict):
            for key in list(dict.keys(store))[::every]:
                job = dict.__getitem__(store, key)
                job["status"] = "running"
                store[key] = job
        self.run_pass()

    def pass_nothing(self, loops: int) -> float:
        """Time `loops` passes that find nothing to evict."""
        run_pass, timer = self.run_pass, time.perf_counter
        gc.disable()
        try:
            start = timer()
            for _ in range(loops):
                run_pass()
            elapsed = timer() - start
        finally:
            gc.enable()
        return elapsed

    def pass_one_percent(self, loops: int) -> float:
        """Time `loops` passes that each evict the oldest batch (1%); refill untimed."""
        elapsed = 0.0
        timer = time.perf_counter
        gc.disable()
        try:
            for _ in range(loops):
                self.clock.now = max(self.clock.now, self.batches.popleft() + MAX_AGE)
                start = timer()
                evicted = self.run_pass()
                elapsed += timer() - start
                self.evicted.append(evicted)
                self.add_batch()
        finally:
            gc.enable()
        return elapsed


def managed(n: int) -> Aged:
    """A managed dict store of `n` jobs, `max_age` = 1000 simulated seconds."""
    clock = FakeClock()
    manager = MemoryManager(clock=clock)

    @managed_store(max_age=MAX_AGE, name=f"bench_pass_{n}", manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        """A managed dict store bounded by age."""

    def run_pass() -> int:
        return manager.run_cleanup().evicted

    return Aged(n, store=Jobs(), clock=clock, run_pass=run_pass)


def ttl_cache(n: int) -> Aged:
    """A cachetools TTLCache of `n` jobs with the same ages and clock; a pass is `expire()`."""
    clock = FakeClock()
    cache: cachetools.TTLCache[int, Any] = cachetools.TTLCache(maxsize=n * 2, ttl=MAX_AGE,
                                                               timer=clock)

    def run_pass() -> int:
        return len(cache.expire())

    return Aged(n, store=cache, clock=clock, run_pass=run_pass)


def _phase(subjects: dict[int, tuple[Aged, Aged]], settings: Settings, label: str,
           method: str) -> dict[str, Any]:
    """Time `method` of every store and cache, interleaved; names carry size and `label`."""
    funcs: dict[str, TimeFunc] = {}
    for n, (store, cache) in subjects.items():
        funcs[f"pass, {n:.0e} jobs, {label}"] = getattr(store, method)
        funcs[f"TTLCache.expire, {n:.0e} jobs, {label}"] = getattr(cache, method)
    return compare(funcs, settings, group="pass")


def run(quick: bool, *, settings: Optional[Settings] = None,
        sizes: tuple[int, ...] = SIZES, turnover: int = TURNOVER) -> dict[str, Any]:
    """Measure case 3 and state the scaling targets."""
    settings = settings or Settings.for_mode(quick)
    fill_start = time.perf_counter()
    subjects = {n: (managed(n), ttl_cache(n)) for n in sizes}
    fill_seconds = time.perf_counter() - fill_start
    for store, cache in subjects.values():
        # The first pass after the fill evicts nothing but weighs every job (weighing is
        # off the insert path: about 1.4 us a job); untimed, as the fill is. Timed, it made
        # the calibration pick one pass a sample, each then read from a cold cache.
        store.run_pass()
        cache.run_pass()
    gc.collect()
    gc.freeze()  # the jobs are long-lived: keep the collector from walking them while timing
    try:
        t = _phase(subjects, settings, FRESH, "pass_nothing")
        t.update(_phase(subjects, settings, ONE_PERCENT, "pass_one_percent"))
        for store, cache in subjects.values():  # every store has now turned over >= 30%
            for aged in (store, cache):
                missing = turnover - len(aged.evicted)
                if missing > 0:
                    aged.pass_one_percent(missing)
        t.update(_phase(subjects, settings, TURNED_OVER, "pass_nothing"))
        for store, cache in subjects.values():
            store.run_lifecycle()
            cache.run_lifecycle()
        t.update(_phase(subjects, settings, FINISHED, "pass_nothing"))
        for store, cache in subjects.values():
            store.keep_running()
            cache.keep_running()
        t.update(_phase(subjects, settings, RUNNING, "pass_nothing"))
    finally:
        gc.unfreeze()
    smallest, largest = sizes[0], sizes[-1]
    rows = []
    for label in (FRESH, TURNED_OVER, FINISHED, RUNNING, ONE_PERCENT):
        base = t[f"pass, {smallest:.0e} jobs, {label}"]
        for n, (store, _) in subjects.items():
            mine = t[f"pass, {n:.0e} jobs, {label}"]
            peer = t[f"TTLCache.expire, {n:.0e} jobs, {label}"]
            note = ""
            if label == ONE_PERCENT:
                note = (f"{store.batch} evicted per pass, "
                        f"{mine.best / store.batch * 1e9:.0f} ns per job")
                if set(store.evicted) != {store.batch}:
                    note += f"; evicted counts seen {sorted(set(store.evicted))}"
            rows.append(timing_row(mine, [base, peer] if n != smallest else [peer], note=note))
    for label in (FRESH, TURNED_OVER, FINISHED, RUNNING, ONE_PERCENT):
        base = t[f"TTLCache.expire, {smallest:.0e} jobs, {label}"]
        for n in sizes:
            timing = t[f"TTLCache.expire, {n:.0e} jobs, {label}"]
            rows.append(timing_row(timing, [base] if n != smallest else []))
    rows.append(row("fill time, all sizes, both contenders", fill_seconds, "s"))
    targets = []
    for label in (FRESH, TURNED_OVER, FINISHED, RUNNING):
        big = t[f"pass, {largest:.0e} jobs, {label}"]
        small = t[f"pass, {smallest:.0e} jobs, {label}"]
        targets.append(target(
            f"pass evicting nothing ({label}): {largest:.0e} jobs vs {smallest:.0e}",
            ratio(big, small), "<=", 5.0, "x",
            detail=f"{big.best * 1e6:.1f} us vs {small.best * 1e6:.1f} us"))
    mine = t[f"pass, {smallest:.0e} jobs, {FRESH}"]
    peer = t[f"TTLCache.expire, {smallest:.0e} jobs, {FRESH}"]
    targets.append(target(
        f"pass evicting nothing ({FRESH}, {smallest:.0e} jobs) vs TTLCache.expire()",
        ratio(mine, peer), "<=", 5.0, "x",
        detail=f"{mine.best * 1e6:.2f} us vs {peer.best * 1e6:.2f} us"))
    notes = [
        "A pass is manager.run_cleanup() on a manager holding just that store (prepare, "
        "age -> idle -> count/bytes -> emergency rules, evictions, release, report).",
        f"'{FRESH}': nothing evicted since the fill. '{TURNED_OVER}': after at least {turnover} "
        "passes that each evicted the oldest 1% and refilled it, the steady state of a store "
        "with churn. "
        f"'{FINISHED}': after every job was rewritten as running (a status update), then "
        "finished and weighed by one pass, as jobs really arrive. "
        f"'{RUNNING}': then every tenth job rewritten as running and left running.",
        "The collector is frozen (gc.freeze) and off while timing: a pass is measured, "
        "not a full collection over a million jobs.",
    ]
    return case("pass", "3. pipeline pass cost by store size", rows=rows, targets=targets,
                notes=notes, params={"sizes": list(sizes), "max_age": MAX_AGE,
                                     "batches": BATCHES, "turnover_passes": turnover})
