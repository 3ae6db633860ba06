"""What the parts of a `JobIndex` share: the attributes they read and write, and the methods
one part calls on another. `JobIndex` (memguard.index.job_index) is built from them:

- the facade itself (job_index): the read path, the write path (with the inline fast path of
  the commonest insert), removals, pins and the questions the stores ask;
- `Walks` (memguard.index.walks): the eviction candidates in each order, the tiers of the
  global emergency order, the `max_running` watch, the re-checks of active jobs;
- `Weighing` (memguard.index.weighing): weighing at insert or later, a job seen finished;
- `ForkRepair` (memguard.index.fork): the repair of an index torn by a fork, and the fork
  hooks that take and renew every store lock.

The parts are mixins of one class, not objects of their own: a method of one calls another
through `self` as before, at no extra cost on the insert path.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from memguard.index.activity import ActiveJobs, Pins
from memguard.index.orders import Orders
from memguard.index.sizes import Sizes

Key = Hashable


class IndexObserver(Protocol):
    """What a trace recorder hears from an index (lock held; must be quick, never raise)."""

    def stored(self, key: Key, new: bool, size: Optional[int]) -> None:
        """A write: `new` for a key not stored before; `size` None while the job is active."""

    def finished(self, key: Key, size: int) -> None:
        """A job stored active was seen finished (no write) and weighed."""

    def read(self, keys: list[Key]) -> None:
        """Stored keys read since the last drain, least recently read first."""

    def removed(self, key: Key) -> None:
        """A job left the index (deleted by the application, or evicted)."""


class _Nothing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<nothing>"


#: No key: what `JobIndex.writing` holds outside an insert.
NOTHING: Any = _Nothing()


class IndexBase:
    """The state of a `JobIndex`, declared for its parts (`JobIndex.__init__` sets it; the
    slots are all here: every part subclasses this one layout)."""

    __slots__ = ("__weakref__", "active", "activity", "created", "created_churn", "defer_weighing",
                 "deferred", "failed", "job_of", "known_active", "lock", "mean_size", "observer",
                 "orders", "pin_table", "pins", "reads", "resync", "returned", "returned_seq",
                 "sizes", "status", "total_bytes", "unweighed", "watches_written", "writing",
                 "written")

    job_of: Callable[[Key], Any]
    active: Callable[[Any], bool]
    created: dict[Key, float]
    written: dict[Key, float]
    watches_written: bool
    reads: dict[Key, Any]
    failed: dict[Key, None]
    orders: Orders
    sizes: Sizes
    unweighed: dict[Key, None]
    activity: ActiveJobs
    known_active: dict[Key, None]
    pin_table: Pins
    pins: dict[Key, int]
    observer: Optional[IndexObserver]
    lock: threading.RLock
    writing: Any
    returned: list[tuple[float, int, Key]]
    returned_seq: itertools.count[int]
    resync: bool
    total_bytes: int
    created_churn: int
    defer_weighing: bool
    deferred: list[Key]
    mean_size: int
    status: Optional[tuple[str, frozenset[Any]]]

    if TYPE_CHECKING:  # one part's methods another part calls
        def drain_reads(self) -> None: ...
        def remove(self, key: Key) -> Optional[int]: ...
        def is_active(self, key: Key, job: Any) -> bool: ...
        def size_of(self, key: Key) -> Optional[int]: ...
        def track_deliveries(self, on: bool) -> None: ...
        def _look(self, key: Key, weighed_only: bool) -> object: ...
        def _returning(self, key: Key) -> None: ...
        def weigh_deferred(self) -> None: ...
        def _job_or_forget(self, key: Key) -> Any: ...
        def _turned_inactive(self, key: Key, job: Any, *, reweigh: bool = False) -> None: ...
