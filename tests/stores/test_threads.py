"""Real threads hammering one managed store: no exception, an exact index at the end."""

from __future__ import annotations

import contextlib
import random
import threading
from typing import Any

from memguard import MemoryManager, handle, managed_store
from memguard.testing import FakeClock

THREADS = 8
OPERATIONS_PER_THREAD = 8_000  # 64k operations in all


def test_mixed_reads_writes_and_cleanups_keep_the_index_exact() -> None:
    clock = FakeClock(0.0)
    manager = MemoryManager(clock=clock)

    @managed_store(manager=manager, max_jobs=200, max_age=50, max_idle=20)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    h = handle(store)
    errors: list[BaseException] = []
    evicted_active: list[Any] = []
    start = threading.Barrier(THREADS)

    def check_eviction(event: Any) -> None:
        if event.cause.value != "explicit" and event.key.startswith("run"):
            evicted_active.append(event.key)

    manager.on_evict(check_eviction)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        try:
            for _ in range(OPERATIONS_PER_THREAD):
                key = f"job{rng.randrange(400)}"
                op = rng.random()
                if op < 0.40:
                    store.get(key)
                    with contextlib.suppress(KeyError):
                        store[key]
                elif op < 0.70:
                    store[key] = {"status": "done", "result": "x" * rng.randrange(10, 500)}
                elif op < 0.75:
                    run = f"run{seed}-{rng.randrange(5)}"
                    store[run] = {"status": "running", "result": None}
                elif op < 0.85:
                    store.pop(key, None)
                elif op < 0.88:
                    store.update({key: {"status": "done", "result": "y"}})
                elif op < 0.90:
                    store.setdefault(key, {"status": "done", "result": "z"})
                elif op < 0.93:
                    h.pin(key)
                    h.unpin(key)
                elif op < 0.97:
                    clock.advance(rng.random())
                    h.cleanup()
                else:
                    list(store.items())
                    h.stats()
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert evicted_active == []

    index = h.index
    assert set(index.created) == set(store)
    assert sorted(map(str, h.recency())) == sorted(map(str, store))
    assert len(h.recency()) == len(store)
    assert index.pins == {}
    assert index.total_bytes == sum(index.size_of(k) or 0 for k in store)
    h.cleanup()
    inactive = [k for k, job in store.items() if job["status"] != "running"]
    assert len(store) <= 200 or not inactive
