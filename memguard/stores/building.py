"""The building blocks every kind of managed store shares: its spec, its handle, indexed writes,
and finding the handle of a store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Optional,
    TypeVar,
)

import attrs

from memguard.errors import StoreDefinitionError
from memguard.index.job_index import Key
from memguard.stores import registry
from memguard.stores.backend import Backend
from memguard.stores.handle import LocalHandle
from memguard.stores.protocol import StoreHandle, as_handle

if TYPE_CHECKING:
    from memguard.stores.registry import StoreHost


C = TypeVar("C", bound=type)
_MISSING: Any = object()


@attrs.frozen
class _Spec:
    name: str
    declared: Mapping[str, Any]
    manager: Optional[StoreHost]


class _NoReads(dict):  # type: ignore[type-arg]
    """The read set of a dict no longer attached to a store: it keeps nothing."""

    __slots__ = ()

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


_NO_READS = _NoReads()


def _manager_of(spec: _Spec) -> StoreHost:
    return spec.manager if spec.manager is not None else registry.default_host()


def _new_handle(spec: _Spec, backend: Backend) -> LocalHandle:
    manager = _manager_of(spec)
    try:
        handle = LocalHandle(spec.name, manager=manager, declared=spec.declared, backend=backend)
    except (ValueError, TypeError) as error:
        raise StoreDefinitionError(f"store {spec.name!r}: {error}") from None
    return handle


def _finish(cls: type, managed: type, spec: Optional[_Spec]) -> type:
    for attribute in ("__module__", "__qualname__", "__doc__"):
        setattr(managed, attribute, getattr(cls, attribute))
    managed.__name__ = cls.__name__
    managed.__wrapped__ = cls  # type: ignore[attr-defined]
    # The spec of the nearest managed class: instances of a managed class decorated again
    # (or subclassed, then decorated) are managed once, by the outermost decoration.
    managed._memguard_spec = spec  # type: ignore[attr-defined]
    return managed


def _slots_for(cls: type, *names: str) -> tuple[str, ...]:
    """The slots `names` not already provided by a base, plus `__weakref__` if missing
    (a C base such as OrderedDict may support weak references without naming the slot)."""
    weakrefable = getattr(cls, "__weakrefoffset__", 0) != 0
    wanted = (*names, *(() if weakrefable else ("__weakref__",)))
    return tuple(name for name in wanted if not any(
        name in getattr(k, "__slots__", ()) or name in vars(k) for k in cls.__mro__))


# -- building blocks shared by every kind of store ------------------------------------------------
#
# The managed methods are closures over the base class's own methods, looked up once when the
# class is built, rather than methods of a mixin calling `super()`: a call then pays a cell
# load instead of an attribute lookup through the MRO, which would be a visible part of a read
# that costs a few tens of ns. Each factory below returns the methods of one concern.

def _open_store(store: Any, spec: _Spec, backend: Backend) -> LocalHandle:
    """Give a new store instance its handle (before the class's own `__init__` fills it)."""
    store_handle = _new_handle(spec, backend)
    attach(store, store_handle)
    return store_handle


def _enroll(store_handle: LocalHandle, store: Any) -> None:
    """Index what a new store holds (filled without `__setitem__`) and register it."""
    store_handle.reconcile()
    store_handle.manager.register(store_handle, store)


def _indexed_writes(base_setitem: Callable[[Any, Key, Any], None],
                    base_delitem: Callable[[Any, Key], None],
                    landed: Optional[Callable[[Any, Key, Any], Any]] = None) -> dict[str, Any]:
    """`__setitem__` and `__delitem__` that keep the index exact (for every kind of store).

    A `mapping=` dict can be detached (replaced) while a writer waits for the lock: after
    taking it, a write into a dict that is no longer the store's is a plain write. With
    `landed` (a class with its own `__setitem__`: returns what the store now holds under the
    key, or `_MISSING`), the index follows what the class really stored: a write that did not
    land under its key (normalised, refused) is followed by comparing the store's keys with
    the index (O(n), warned about once per class).
    """

    def __setitem__(self: Any, key: Key, value: Any) -> None:
        handle: Optional[LocalHandle] = self._memguard
        if handle is None:  # detached
            return base_setitem(self, key, value)
        with handle.index.lock:  # (not the `lock` property: a call per write)
            base_setitem(self, key, value)
            if self._memguard is not handle:
                return
            stored = value if landed is None else landed(self, key, value)
            if stored is not _MISSING:  # what the class really keeps under `key`
                victims = handle.stored_locked(key, stored)
            else:
                victims = handle.follow_locked(type(self), key, value)
            # A burst wakes the monitor: `Intake.count` and the index's `intake_bytes`,
            # inline (each would be a call per write).
            intake = handle.manager.intake
            intake.jobs += 1
            index = handle.index
            if (intake.jobs >= intake.jobs_mark or index.total_bytes
                    + len(index.deferred) * index.mean_size >= intake.bytes_mark):
                intake.trip()
        if victims:  # release and callbacks outside the lock
            handle.finish_insert(victims)

    def __delitem__(self: Any, key: Key) -> None:
        handle: Optional[LocalHandle] = self._memguard
        if handle is None:
            return base_delitem(self, key)
        with handle.index.lock:
            base_delitem(self, key)
            if self._memguard is handle:
                handle.index.remove(key)

    __setitem__._memguard_wrapped = True  # type: ignore[attr-defined]
    return {"__setitem__": __setitem__, "__delitem__": __delitem__}


def attach(store: Any, handle: Optional[LocalHandle]) -> None:
    """Give `store` its handle (and managed dicts the read set itself, for a read path of two
    C calls without an attribute chain)."""
    store._memguard = handle
    if hasattr(type(store), "_memguard_reads"):
        store._memguard_reads = _NO_READS if handle is None else handle.index.reads


# -- finding a store's handle ----------------------------------------------------------------------

def handle(store: Any) -> StoreHandle:
    """The `StoreHandle` of a managed store instance (in-process or Redis), or of a
    registered plain dict; a handle is returned as it is."""
    found = as_handle(store) or as_handle(getattr(store, "_memguard", None))
    if found is not None:
        return found
    for host in registry.hosts():
        plain = as_handle(host.plain_handle(store))
        if plain is not None:
            return plain
    raise TypeError(
        f"{type(store).__qualname__} is not a managed store: decorate its class with "
        "@managed_store or register it with manager.setup_job_store_cleanup()")
