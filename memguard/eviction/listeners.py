"""`Listeners`: the `on_evict` callbacks of one manager, and how they are called.

Kept apart from the manager so the one rule about them reads in one place: a callback is
called outside every store lock, once per event, and one that raises is logged without
stopping the others (or the eviction that produced the event).
"""

from __future__ import annotations

from typing import Callable

from memguard._logging import logger
from memguard.eviction.events import EvictionEvent

EvictionCallback = Callable[[EvictionEvent], object]


class Listeners:
    """The registered callbacks, as an immutable tuple replaced on each change: `notify`
    reads it without a lock, and the owner serializes `add` and `remove`."""

    __slots__ = ("callbacks",)

    def __init__(self) -> None:
        self.callbacks: tuple[EvictionCallback, ...] = ()

    def add(self, callback: EvictionCallback) -> None:
        self.callbacks += (callback,)

    def remove(self, callback: EvictionCallback) -> None:
        self.callbacks = tuple(c for c in self.callbacks if c is not callback)

    def notify(self, events: list[EvictionEvent]) -> None:
        """Call every callback with every event, in order; a failure is logged."""
        for callback in self.callbacks:
            for event in events:
                try:
                    callback(event)
                except Exception:
                    logger.exception("memguard: on_evict callback %r failed", callback)
