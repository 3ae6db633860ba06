"""What the parts of a `LocalHandle` share: the attributes they read and write, and the
methods one part calls on another. `LocalHandle` (memguard.stores.handle) is built from:

- the handle itself (handle): policy and plan, the public operations, stats;
- `InsertPath` (memguard.stores.inserts): a write's index update and its insert-time
  bounds, the plan's cheap eviction, the victims' release outside the lock;
- `PassPath` (memguard.stores.passes): a periodic pass, its O(1) skip when nothing is due,
  and the catch-ups before it (plain dicts, re-checks, deferred weighing).

The parts are mixins of one class: a method of one calls another through `self`, as before.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from memguard.eviction.events import Cause, EvictionEvent
from memguard.eviction.plan import EvictionPlan
from memguard.eviction.rules import Pass
from memguard.index.job_index import JobIndex, Key
from memguard.stores.backend import Backend

if TYPE_CHECKING:
    from memguard.stores.registry import StoreHost


class Victim(NamedTuple):
    """An evicted job between its removal (under the lock) and its release (outside)."""

    key: Key
    job: Any
    cause: Cause
    size: Optional[int]


class HandleState:
    """The state of a `LocalHandle`, declared for its parts (`LocalHandle.__init__` and
    `_use` set it)."""

    name: str
    manager: StoreHost
    index: JobIndex
    plan: EvictionPlan
    _backend: Backend
    _evictions: Counter[str]
    _count_evicted: int
    _max_jobs: Optional[int]
    _max_bytes: Optional[int]
    _soft: bool
    _give_back: bool
    _unweighed_victims: int
    _checkable: bool
    _due: float
    _fast_over: int

    if TYPE_CHECKING:  # one part's members another part uses
        @property
        def lock(self) -> threading.RLock: ...
        def evict_locked(self, key: Key, cause: Cause) -> Optional[Victim]: ...
        def finish_evictions(self, victims: list[Victim]) -> list[EvictionEvent]: ...
        def prepare_pass(self, ctx: Optional[Pass] = None) -> None: ...
        def soft_expired(self, now: float) -> Iterator[tuple[Key, Cause]]: ...
