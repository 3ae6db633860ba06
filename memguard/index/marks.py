"""What a store's orders hold and what their scans go by (memguard.index.orders): `Epoch`
markers, the verdicts of a `look` function, the process-wide stamps of deliveries and
finishes, the mark of a write in a read set, and `LargestFirst`, the heap of the `largest`
order.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable
from typing import Any, Callable, Optional

Key = Hashable
#: What a `look` function makes of a key: evictable; active (running); pinned; kept for
#: another reason (the job being written, a job of no size in a byte scan); gone.
EVICTABLE, ACTIVE, PINNED, KEEP, GONE = object(), object(), object(), object(), object()
Look = Callable[[Key, bool], object]

MAX_EPOCHS = 64

#: Stamps of deliveries and finishes, one counter for every store of the process, so the
#: global emergency order can compare them across stores without reading the clock. A
#: stamp dates the moment the index learned of the event (a drain, a write, a re-check).
STAMPS = itertools.count(1)
#: The mark of a write in a read set (`JobIndex.reads`): a touch, not a delivery. A read
#: marks None.
WRITTEN: Any = object()


class Epoch:
    """A marker in the LRU order: every job before it was last touched at or before `time`."""

    __slots__ = ("time",)

    def __init__(self, time: float) -> None:
        self.time = time

    def __repr__(self) -> str:
        return f"Epoch({self.time:g})"


class LargestFirst:
    """The weighed jobs of a store in a heap of `(-size, seq, key)`, largest first.

    Entries are never deleted in place: a job re-weighed gets a new entry, and one that is
    stale (the job is gone, or its size is no longer the entry's) is skipped when popped.
    `seq` breaks ties (never the keys, which need not be comparable): among jobs of one size,
    the one weighed first comes first. When the heap holds twice the entries it had at its
    last rebuild (plus 64) it is rebuilt from the live sizes, O(n) once per O(n) pushes.
    """

    __slots__ = ("count", "heap", "limit", "used")

    def __init__(self, sizes: Iterable[tuple[Any, Optional[int]]]) -> None:
        self.heap: list[tuple[int, int, Key]] = []
        self.count = itertools.count()
        self.limit = 64
        self.used = True  # a largest-first walk ran since the last rebuild
        self.rebuild(sizes)

    def rebuild(self, sizes: Iterable[tuple[Any, Optional[int]]]) -> None:
        """Start again from `sizes` (key, size) pairs, in their order for equal sizes."""
        count = self.count = itertools.count()
        heap = [(-size, next(count), key) for key, size in sizes if size]
        heapq.heapify(heap)
        self.heap = heap
        self.limit = 2 * len(heap) + 64

    def push(self, key: Key, size: int) -> None:
        heapq.heappush(self.heap, (-size, next(self.count), key))
