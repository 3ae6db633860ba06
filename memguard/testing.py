"""Fakes for users' own tests: a clock you advance, a probe you set, a reclaim that counts,
captured evictions."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Callable, Optional, Union

from memguard.eviction.events import EvictionEvent
from memguard.memory.reclaim import Reclaim
from memguard.policy.units import parse_size

if TYPE_CHECKING:
    from memguard.manager import MemoryManager
    from memguard.memory.samples import MemorySample


class FakeClock:
    """A monotonic clock that moves only when told: `clock()` reads, `advance(s)` moves."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (thread-safe); a monotonic clock never goes back."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back; got advance({seconds})")
        with self._lock:
            self.now += seconds

    def __repr__(self) -> str:
        return f"FakeClock({self.now:g})"


class FakeReclaim:
    """Stands in for `memguard.memory.reclaim.reclaim` (gc, then the allocator's trim), passed
    as ``MemoryManager(reclaim=FakeReclaim())``: it counts calls in `calls` and collects
    nothing, so a test never garbage-collects its own process. `then`, when given, runs after
    each call: ``FakeReclaim(then=lambda: probe.set("260MB"))`` models memory given back."""

    def __init__(self, then: Optional[Callable[[], object]] = None, *,
                 trimmed: bool = False) -> None:
        self.calls = 0
        self.then = then
        self.trimmed = trimmed

    def __call__(self, *, full: bool = True) -> Reclaim:
        self.calls += 1
        if self.then is not None:
            self.then()
        return Reclaim(collected=0, trimmed=self.trimmed, seconds=0.0)

    def __repr__(self) -> str:
        return f"FakeReclaim(calls={self.calls})"


def _bytes(value: Union[int, str]) -> int:
    size = parse_size(value)
    if not isinstance(size, int):
        raise ValueError(f"expected a size in bytes or like '450MB'; got {value!r}")
    return size


class FakeProbe:
    """A memory probe reporting what the test sets: `probe.set("450MB")`."""

    def __init__(self, usage: Union[int, str], limit: Union[int, str, None] = None, *,
                 heap: Union[int, str, None] = None, scope: str = "process") -> None:
        self.usage = _bytes(usage)
        self.limit = None if limit is None else _bytes(limit)
        self.heap = None if heap is None else _bytes(heap)
        self.scope = scope
        self.calls = 0

    def set(self, usage: Union[int, str], *, heap: Union[int, str, None] = None) -> None:
        self.usage = _bytes(usage)
        if heap is not None:
            self.heap = _bytes(heap)

    def __call__(self) -> MemorySample:
        from memguard.memory.samples import MemorySample

        self.calls += 1
        return MemorySample(usage=self.usage, rss=self.usage, swap=0, heap=self.heap,
                            limit=self.limit, scope=self.scope)


@contextlib.contextmanager
def capture_evictions(manager: Optional[MemoryManager] = None) -> Iterator[list[EvictionEvent]]:
    """Collect the `EvictionEvent`s of `manager` (default: memguard.manager) in a list."""
    if manager is None:
        from memguard.manager import manager as default

        manager = default
    events: list[EvictionEvent] = []
    collect = events.append
    manager.on_evict(collect)
    try:
        yield events
    finally:
        manager.remove_evict_callback(collect)


__all__ = ["FakeClock", "FakeProbe", "capture_evictions"]
