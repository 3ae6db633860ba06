"""`StoreHandle`: the one protocol of a store's control surface, and `StoreStats`.

Two classes implement it, side by side: `memguard.stores.handle.LocalHandle` (a store held
in this process, with its own `JobIndex`) and `memguard.redis.handle.RedisHandle` (a store
whose jobs and rules live in Redis). Neither inherits the other; each declares this
protocol as its base, so mypy checks it against every member and `as_handle` recognises it
with a cheap class test (an `isinstance` against a protocol with data members compares every
member, tens of microseconds, too slow for code that looks a handle up at each call).

The members are what a user reaches through `memguard.handle(store)` (`name`, `policy`,
`touch`, `pin`, `unpin`, `in_use`, `stats`, `cleanup`, `evict`, `recency`) and what the
manager, the monitor and `@touches` call (`policy_source`, `effective_policy`,
`apply_policy`, `declare`, `run_pass`, and `index`: counts and bytes as of the store's last
look, never a network call, plus the batched read set `@touches` fills).
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from contextlib import AbstractContextManager
from typing import Any, Optional, Protocol, cast, runtime_checkable

import attrs

from memguard.eviction.events import CleanupReport, EvictionEvent
from memguard.eviction.rules import Pass
from memguard.policy.options import StorePolicy
from memguard.policy.policy import Policy


@attrs.frozen
class StoreStats:
    """Counts and sizes of one store; never job contents."""

    name: str
    jobs: int
    active: int
    pinned: int
    bytes: int
    unweighed: int
    evictions: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class HandleIndex(Protocol):
    """What the manager, the monitor and `@touches` read of a handle's index: how many jobs
    and weighed bytes it held at its last look (cheap: no scan, no network), and the read
    set that `@touches` and the store's reads fill (drained into the recency order later)."""

    @property
    def total_bytes(self) -> int: ...

    @property
    def reads(self) -> dict[Any, None]: ...

    @property
    def created(self) -> Container[Any]: ...

    def __len__(self) -> int: ...

    def touch(self, key: Any) -> None: ...


@runtime_checkable
class StoreHandle(Protocol):
    """The control surface of one store instance, in-process or in Redis.

    `handle(store)` returns one. Every member works on both implementations; what a Redis
    store does differently (server time, pins as leases, Redis' own memory driving its
    emergency rule) is documented on `memguard.redis.handle.RedisHandle`.
    """

    #: The store's name (its `[stores.NAME]` section).
    name: str
    #: The effective policy of the store (built-in < [defaults] < decorator < [stores.NAME]).
    policy: StorePolicy
    #: The `Policy` last applied (the manager re-applies a newer one at registration).
    policy_source: Optional[Policy]
    #: Counts and bytes as of the last look, and the read set (see `HandleIndex`).
    index: HandleIndex

    def touch(self, key: Any) -> None:
        """Mark `key` as just used; an unknown key is ignored."""
        ...

    def pin(self, key: Any) -> None:
        """Keep `key` from eviction until as many `unpin` calls; pins nest."""
        ...

    def unpin(self, key: Any) -> None:
        """Undo one `pin` of `key`; a key not pinned is ignored."""
        ...

    def in_use(self, key: Any) -> AbstractContextManager[None]:
        """Pin `key` for the duration of a `with` block."""
        ...

    def stats(self) -> StoreStats:
        """Jobs, active jobs, pins, bytes and evictions by cause; never raises for a store
        that cannot be reached (it says so in the stats)."""
        ...

    def cleanup(self, *, now: Optional[float] = None) -> CleanupReport:
        """Run one periodic pass of this store's rules and report it."""
        ...

    def evict(self, key: Any) -> Optional[EvictionEvent]:
        """Evict `key` now (cause `explicit`), active or not; None if it is not stored."""
        ...

    def recency(self) -> list[Any]:
        """Job keys, least recently used first."""
        ...

    def run_pass(self, ctx: Pass) -> list[EvictionEvent]:
        """One pass of the store's plan in `ctx` (an emergency when it carries a budget)."""
        ...

    def effective_policy(self, policy: Policy,
                         declared: Optional[Mapping[str, Any]] = None) -> StorePolicy:
        """What `policy` makes of this store, given its decorator arguments (`declared`, when
        given, stands for them: what `declare` would make them); may raise."""
        ...

    def apply_policy(self, policy: Policy, effective: Optional[StorePolicy] = None) -> None:
        """Switch to `policy` at once (its eviction plan is built here)."""
        ...

    def declare(self, **rules: Any) -> None:
        """Add decorator-level options (`setup_job_store_cleanup`) and re-apply the policy;
        on a bad value nothing changes (ValueError or TypeError naming it)."""
        ...


def as_handle(candidate: object) -> Optional[StoreHandle]:
    """`candidate` if it is one of memguard's store handles, else None.

    A class test (both implementations name `StoreHandle` as a base), about 100 ns, where
    `isinstance(candidate, StoreHandle)` would compare every member of the protocol.
    """
    if StoreHandle in type(candidate).__mro__:
        return cast(StoreHandle, candidate)
    return None
