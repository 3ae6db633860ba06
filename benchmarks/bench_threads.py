"""Case: one writer and four readers on the same store, at the same time, in real threads.

A web worker with threads polls jobs (readers) while a job finishes and stores its result (the
writer). Under the GIL, what matters is how much of the writer's share of the interpreter a
store's write costs, and whether readers starve it. Contenders:

- a managed store at its `max_jobs` bound (so every write evicts one job): reads are
  `store[k]` without a lock, as apps write them; writes take the store's lock inside;
- `cachetools.LRUCache` behind one `threading.Lock`, which every read and write takes (an
  LRU read reorders, so sharing one without a lock is unsafe): the usual way to share it.

Each round runs every contender for the same wall time, in alternating order; the figures are
each contender's best round (operations per second: the writer's, and everyone's).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

import cachetools

from benchmarks import Settings, case, row, target
from memguard import MemoryManager, managed_store

READERS = 4
CAPACITY = 10_000
BATCH = 64  # operations between two looks at the stop flag


def _job() -> dict[str, Any]:
    return {"status": "done", "result": "x" * 200}


def _managed(manager: MemoryManager) -> Any:
    @managed_store(max_jobs=CAPACITY, name="bench_threads", manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        """The managed store: a bounded dict."""

    return Jobs()


class Contender:
    """One store and how its writer and readers use it."""

    def __init__(self, name: str, store: Any, lock: Optional[threading.Lock]) -> None:
        self.name = name
        self.store = store
        self.lock = lock
        for key in range(CAPACITY):
            self.write(key)
        self.next_key = CAPACITY

    def write(self, key: int) -> None:
        if self.lock is None:
            self.store[key] = _job()
        else:
            with self.lock:
                self.store[key] = _job()

    def read(self, key: int) -> None:
        try:
            if self.lock is None:
                self.store[key]
            else:
                with self.lock:
                    self.store[key]
        except KeyError:  # evicted meanwhile: the read still happened
            pass


def _writer(contender: Contender, stop: threading.Event, counts: list[int]) -> None:
    done = 0
    while not stop.is_set():
        base = contender.next_key
        for key in range(base, base + BATCH):
            contender.write(key)
        contender.next_key = base + BATCH
        done += BATCH
    counts[0] = done


def _reader(contender: Contender, stop: threading.Event, counts: list[int],
            slot: int) -> None:
    done = 0
    step = 7919 * (slot + 1)  # a different walk over the recent half for each reader
    position = 0
    while not stop.is_set():
        newest = contender.next_key
        for _ in range(BATCH):
            position = (position + step) % (CAPACITY // 2)
            contender.read(newest - 1 - position)
        done += BATCH
    counts[slot] = done


def one_round(contender: Contender, seconds: float) -> tuple[float, float]:
    """Run the writer and the readers for `seconds`; (writes per s, operations per s)."""
    stop = threading.Event()
    counts = [0] * (READERS + 1)
    threads = [threading.Thread(target=_writer, args=(contender, stop, counts))]
    threads += [threading.Thread(target=_reader, args=(contender, stop, counts, slot))
                for slot in range(1, READERS + 1)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.perf_counter() - start
    return counts[0] / elapsed, sum(counts) / elapsed


def run(quick: bool, *, settings: Optional[Settings] = None, rounds: Optional[int] = None,
        seconds: Optional[float] = None) -> dict[str, Any]:
    """Measure the case and state its targets (`rounds` and `seconds` override the mode's)."""
    rounds = rounds or (3 if quick else 6)
    seconds = seconds or (1.0 if quick else 2.0)
    manager = MemoryManager()  # private: the suite never touches the process-wide manager
    makers: dict[str, Callable[[], Contender]] = {
        "managed store (max_jobs, lock-free reads)":
            lambda: Contender("managed", _managed(manager), None),
        "cachetools LRUCache + Lock":
            lambda: Contender("lru", cachetools.LRUCache(maxsize=CAPACITY), threading.Lock()),
    }
    contenders = {name: make() for name, make in makers.items()}
    best: dict[str, tuple[float, float]] = dict.fromkeys(contenders, (0.0, 0.0))
    names = list(contenders)
    for round_number in range(rounds):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            writes, total = one_round(contenders[name], seconds)
            best[name] = (max(best[name][0], writes), max(best[name][1], total))
    ours, peer = best[names[0]], best[names[1]]
    writer_ratio = ours[0] / peer[0] if peer[0] else None
    total_ratio = ours[1] / peer[1] if peer[1] else None
    rows = []
    for name in names:
        writes, total = best[name]
        rows.append(row(f"{name}: writer", writes, "ops/s"))
        rows.append(row(f"{name}: writer + {READERS} readers", total, "ops/s"))
    targets = [
        target(f"writer throughput with {READERS} readers vs cachetools LRUCache + Lock",
               writer_ratio, ">=", 0.5, "x",
               detail=f"{ours[0]:,.0f} vs {peer[0]:,.0f} writes/s"),
        target(f"total throughput (writer + {READERS} readers) vs cachetools LRUCache + Lock",
               total_ratio, ">=", 2.0, "x",
               detail=f"{ours[1]:,.0f} vs {peer[1]:,.0f} operations/s"),
    ]
    notes = [
        f"{CAPACITY} jobs, full: every write evicts one. Best of {rounds} rounds of "
        f"{seconds:g} s per contender, alternating which runs first.",
        "Readers read keys among the newest half, so most reads hit.",
    ]
    return case("threads", f"writer and {READERS} readers, concurrently (operations per s)",
                rows=rows, targets=targets, notes=notes,
                params={"readers": READERS, "capacity": CAPACITY, "rounds": rounds,
                        "seconds": seconds})
