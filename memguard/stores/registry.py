"""Where stores find their manager: the `StoreHost` protocol and the live hosts.

A store handle reaches its manager (clock, policy, registration, eviction listeners) only
through `StoreHost`, so the store layer never imports the manager's module (DESIGN section
1). The manager module adds every `MemoryManager` here and names the process-wide default
one, which stores declared without ``manager=`` use.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Optional, Protocol

if TYPE_CHECKING:
    from memguard.eviction.events import EvictionEvent
    from memguard.policy.policy import Policy
    from memguard.stores.intake import Intake


class StoreHost(Protocol):
    """What a store needs of the manager it belongs to."""

    clock: Callable[[], float]
    intake: Intake
    """Counts inserts; wakes the monitor early after a burst of them (`memguard.stores.intake`)."""

    @property
    def policy(self) -> Policy: ...

    @property
    def stores(self) -> Mapping[str, tuple[Any, ...]]: ...

    def register(self, store_handle: Any, owner: Any) -> None: ...

    def notify_evictions(self, events: list[EvictionEvent], *, in_process: bool = True) -> None: ...

    @property
    def has_listeners(self) -> bool: ...

    def count_freed(self, nbytes: int) -> None: ...

    def plain_handle(self, store: Any) -> Optional[Any]: ...

    def under_pressure(self, *, fresh: bool = False) -> bool:
        """Whether memory is at or above `warning` (soft bounds are enforced only then);
        `fresh` reads memory again when the last sample was close to it."""
        ...


_hosts: weakref.WeakSet[Any] = weakref.WeakSet()
_default: list[StoreHost] = []


def add_host(host: StoreHost) -> None:
    """Make `host` findable (by `memguard.handle` for its plain dicts, by `@touches`)."""
    _hosts.add(host)


def hosts() -> list[StoreHost]:
    """Every live host (the default manager and any an app created)."""
    return list(_hosts)


def set_default(host: StoreHost) -> None:
    """Name the manager of stores declared without ``manager=``."""
    _default[:] = [host]


def default_host() -> StoreHost:
    """The process-wide default manager (created when the `memguard.manager` module loads:
    reaching `memguard.manager`, `memguard.managed_store`, `memguard.touches` or
    `memguard.handle` loads it)."""
    if not _default:
        raise RuntimeError("memguard's default manager is not set up: reach it through the "
                           "package (memguard.managed_store, memguard.manager) or pass manager=")
    return _default[0]
