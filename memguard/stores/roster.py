"""`Roster`: the live stores of one manager, by name, and the plain dicts it adopted.

A store is registered while its owner (the store object) lives: a weak finalizer takes it
out when the owner is collected. A plain dict cannot be weakly referenced, so the handle
the manager adopted it with is kept by the dict's id until it is forgotten, explicitly or,
once nothing else references the dict, at the next listing (`LocalHandle.orphaned`).

The roster's lock is its owner's (the manager's, handed in): the manager holds it around
`add` and `apply_policy`; the other methods take it themselves (`handles()` reads its cached
list without it).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Mapping
from typing import Any, Optional

from memguard.errors import PolicyError
from memguard.policy.policy import Policy
from memguard.stores.backend import Backend
from memguard.stores.building import attach
from memguard.stores.handle import LocalHandle
from memguard.stores.protocol import StoreHandle, as_handle
from memguard.stores.registry import StoreHost


class Roster:
    """Store name -> the live handles of that name, plus the adopted plain dicts."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock  # the manager's: replaced with it after a fork
        self.groups: dict[str, list[StoreHandle]] = {}
        self.listed: Optional[list[StoreHandle]] = None  # `handles()`, until a change
        self.plain: dict[int, LocalHandle] = {}

    def add(self, store_handle: StoreHandle, owner: Any) -> None:
        """Track `store_handle` while `owner` lives (lock held)."""
        self.groups.setdefault(store_handle.name, []).append(store_handle)
        self.listed = None
        try:
            weakref.finalize(owner, self.remove, store_handle)
        except TypeError:  # plain dicts cannot be weakly referenced: kept until forgotten
            if not isinstance(store_handle, LocalHandle):  # (only adopted dicts are)
                raise
            self.plain[id(owner)] = store_handle

    def remove(self, store_handle: StoreHandle) -> None:
        with self.lock:
            group = self.groups.get(store_handle.name, [])
            self.listed = None
            if store_handle in group:
                group.remove(store_handle)
            if not group:
                self.groups.pop(store_handle.name, None)
            for key, plain in list(self.plain.items()):
                if plain is store_handle:
                    del self.plain[key]

    def forget(self, store: Any) -> bool:
        """Stop tracking `store` (a store, or its handle); False if it was not tracked. An
        adopted mapping (not given as its handle) is detached from its handle too."""
        found = as_handle(store)
        given_handle = found is not None
        if found is None:
            found = self.plain.get(id(store)) or as_handle(getattr(store, "_memguard", None))
        with self.lock:
            if found is None or not any(found is h for h in self.every()):
                return False
            self.remove(found)
        if isinstance(found, LocalHandle) and found.adopted and not given_handle:
            with contextlib.suppress(AttributeError, TypeError):
                if getattr(store, "_memguard", None) is found:
                    attach(store, None)  # an adopted MutableMapping: let it go entirely
        return True

    def apply_policy(self, policy: Policy) -> None:
        """Apply `policy` to every tracked store, or (on any error) to none: each store's
        policy is computed first, and a bad one raises PolicyError naming the store (lock
        held)."""
        handles = self.every()
        effective = []
        for store in handles:  # validate everything before applying anything
            try:
                effective.append(store.effective_policy(policy))
            except (ValueError, TypeError) as error:
                if isinstance(error, PolicyError):
                    raise
                raise PolicyError(str(error), source=policy.source,
                                  key=f"stores.{store.name}") from None
        for store, store_policy in zip(handles, effective):
            store.apply_policy(policy, store_policy)

    def every(self) -> list[StoreHandle]:
        """Every tracked handle, in no particular order (lock held)."""
        return [h for group in self.groups.values() for h in group]

    def by_name(self) -> Mapping[str, tuple[StoreHandle, ...]]:
        with self.lock:
            return {name: tuple(group) for name, group in sorted(self.groups.items())}

    def names(self) -> list[str]:
        with self.lock:
            return sorted(self.groups)

    def plain_handle(self, store: Any) -> Optional[LocalHandle]:
        with self.lock:
            return self.plain.get(id(store))

    def handles(self) -> list[StoreHandle]:
        """Every tracked handle, by store name; adopted dicts nothing else references any
        more are forgotten first."""
        found = self.listed  # read without the lock: a change since sets it to None
        if found is not None and not self.plain:
            return found[:]
        with self.lock:
            if self.plain:
                for orphan in [h for h in self.plain.values() if h.orphaned()]:
                    self.remove(orphan)
            found = self.listed
            if found is None:
                found = self.listed = [
                    h for _, group in sorted(self.groups.items()) for h in group]
            return found[:]


def adopt(host: StoreHost, store: Any, name: str, declared: Mapping[str, Any]) -> StoreHandle:
    """What `setup_job_store_cleanup` does: a store `host` already manages (a managed store,
    or a dict adopted before) gets the `declared` rules added; a store type with its own
    ``__memguard_adopt__`` adopts itself (or refuses: RedisStore); any other mapping is
    adopted as a plain one (`adopt_plain`) and registered with `host`."""
    existing = as_handle(getattr(store, "_memguard", None)) or host.plain_handle(store)
    if existing is not None:
        try:
            existing.declare(**declared)
        except (ValueError, TypeError) as error:
            raise setup_error(error, name) from None
        return existing
    declared = {k: v for k, v in declared.items() if v is not None}
    adopt_itself = getattr(store, "__memguard_adopt__", None)
    if adopt_itself is not None:
        adopted: StoreHandle = adopt_itself(host, name, declared)
        return adopted
    store_handle = adopt_plain(host, store, name, declared)
    host.register(store_handle, store)
    return store_handle


def adopt_plain(host: StoreHost, store: Any, name: str,
                declared: Mapping[str, Any]) -> LocalHandle:
    """A handle for `store`, a mapping that is not a managed store: it cannot report its
    writes, so each pass reconciles its keys (O(n)). Not registered yet. A bad rule raises
    PolicyError naming `setup_job_store_cleanup` and the store."""
    backend = Backend(store, get=type(store).__getitem__, delete=type(store).__delitem__,
                       keys=type(store).keys)
    backend.needs_sync = True
    try:
        store_handle = LocalHandle(name, manager=host, declared=dict(declared), backend=backend)
    except (ValueError, TypeError) as error:
        raise setup_error(error, name) from None
    with contextlib.suppress(AttributeError, TypeError):
        attach(store, store_handle)  # plain dicts take no attributes: found by the roster
    store_handle.reconcile()
    return store_handle


def setup_error(error: Exception, name: str) -> PolicyError:
    """A bad rule given to `setup_job_store_cleanup` for store `name`, as a PolicyError."""
    return PolicyError(str(error), source="setup_job_store_cleanup", key=name)
