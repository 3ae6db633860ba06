"""MutableMapping stores: the managed subclass of a `MutableMapping` store class."""

from __future__ import annotations

import copyreg
from collections.abc import ItemsView, Iterator, Mapping, ValuesView
from typing import (
    TYPE_CHECKING,
    Any,
    cast,
)

from memguard.index.job_index import Key
from memguard.stores.backend import Backend
from memguard.stores.building import (
    _MISSING,
    _enroll,
    _finish,
    _indexed_writes,
    _open_store,
    _slots_for,
    _Spec,
)
from memguard.stores.handle import LocalHandle

if TYPE_CHECKING:
    pass


# -- MutableMapping stores --------------------------------------------------------------------

def _managed_mapping_class(cls: Any, spec: _Spec) -> type:
    """A subclass of a MutableMapping class: the class's own methods do the storing."""
    if getattr(cls, "_memguard_spec", None) is not None:  # managed already: a new spec only
        return _finish(cls, type(cls.__name__, (cls,), {"__slots__": ()}), spec)
    reads = _mapping_reads(cls)
    contains = reads["__contains__"]

    def landed(self: Any, key: Key, value: Any) -> Any:
        return value if contains(self, key) else _MISSING

    namespace = {
        "__slots__": _slots_for(cls, "_memguard"),
        **_mapping_lifecycle(cls),
        **reads,
        **_indexed_writes(cls.__setitem__, cls.__delitem__, landed),
        **_mapping_removals(cls),
    }
    return _finish(cls, type(cls.__name__, (cls,), namespace), spec)


def _mapping_backend(cls: Any, store: Any) -> Backend:
    """How the index reaches the jobs of a MutableMapping store: its class's own methods."""
    return Backend(store, get=cls.__getitem__, delete=cls.__delitem__, keys=cls.__iter__)


def _mapping_lifecycle(cls: Any) -> dict[str, Any]:
    """`__init__` and `__copy__`: every instance, copies included, gets a handle of its own."""
    base_init = cls.__init__
    base_copy = getattr(cls, "__copy__", None)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        store_handle = _open_store(self, type(self)._memguard_spec, _mapping_backend(cls, self))
        base_init(self, *args, **kwargs)
        _enroll(store_handle, self)

    def __copy__(self: Any) -> Any:
        """A copy is a store of its own (`UserDict.copy()` and `copy.copy` come here): the
        class's own copy, or a shallow one, then a new handle indexing what it holds."""
        new = base_copy(self) if base_copy is not None else _shallow_copy(self)
        _enroll(_open_store(new, type(new)._memguard_spec, _mapping_backend(cls, new)), new)
        return new

    return {"__init__": __init__, "__copy__": __copy__}


def _shallow_copy(store: Any) -> Any:
    """A new instance of `store`'s class sharing its attributes, except the handle."""
    kind: Any = type(store)
    new = kind.__new__(kind)
    if hasattr(store, "__dict__"):
        new.__dict__.update(store.__dict__)
    for slot in copyreg._slotnames(kind):  # type: ignore[attr-defined]
        if slot not in ("_memguard", "__weakref__") and hasattr(store, slot):
            setattr(new, slot, getattr(store, slot))
    return new


def _mapping_reads(cls: Any) -> dict[str, Any]:
    """`[]` touches; `in`, `values()` and `items()` read without touching."""
    base_getitem = cls.__getitem__
    own_contains = cls.__contains__ is not Mapping.__contains__
    base_contains = cls.__contains__

    def __getitem__(self: Any, key: Key) -> Any:
        value = base_getitem(self, key)
        self._memguard.index.touch(key)
        return value

    def __contains__(self: Any, key: object) -> bool:
        if own_contains:
            return bool(base_contains(self, key))
        try:
            base_getitem(self, key)
        except KeyError:
            return False
        return True

    return {"__getitem__": __getitem__, "__contains__": __contains__,
            "_memguard_raw_get": base_getitem, "values": _quiet_values, "items": _quiet_items}


class _QuietValuesView(ValuesView[Any]):
    """`values()` of a managed MutableMapping: iterating reads without touching."""

    def __iter__(self) -> Iterator[Any]:
        mapping: Any = cast(Any, self)._mapping
        for key in mapping:
            try:
                value = mapping._memguard_raw_get(key)
            except KeyError:  # evicted (or deleted) since the key was listed: it is gone
                continue
            yield value


class _QuietItemsView(ItemsView[Any, Any]):
    """`items()` of a managed MutableMapping: iterating reads without touching."""

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        mapping: Any = cast(Any, self)._mapping
        for key in mapping:
            try:
                value = mapping._memguard_raw_get(key)
            except KeyError:  # evicted (or deleted) since the key was listed: it is gone
                continue
            yield key, value


def _quiet_values(self: Any) -> _QuietValuesView:
    return _QuietValuesView(self)


def _quiet_items(self: Any) -> _QuietItemsView:
    return _QuietItemsView(self)


def _mapping_removals(cls: Any) -> dict[str, Any]:
    """`clear`, `pop` and `popitem`, each whole under the store lock."""
    base_delitem, base_pop, base_popitem = cls.__delitem__, cls.pop, cls.popitem

    def clear(self: Any) -> None:
        handle: LocalHandle = self._memguard
        with handle.lock:
            for key in list(cls.__iter__(self)):
                base_delitem(self, key)
            handle.index.clear()

    def pop(self: Any, key: Key, *default: Any) -> Any:
        # MutableMapping.pop reads, then deletes: an eviction in between would raise KeyError
        with self._memguard.lock:
            return base_pop(self, key, *default)

    def popitem(self: Any) -> tuple[Key, Any]:
        with self._memguard.lock:
            return base_popitem(self)  # type: ignore[no-any-return]

    return {"clear": clear, "pop": pop, "popitem": popitem}
