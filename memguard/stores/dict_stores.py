"""Dict stores: the managed subclass of a dict (or dict subclass) store."""

from __future__ import annotations

import functools
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Optional,
    cast,
)

from memguard.index.job_index import Key
from memguard.stores.backend import Backend, dict_get
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


# -- dict stores ------------------------------------------------------------------------------


#: Write methods an undecorated subclass of a managed dict class may override.
_ABSORBED = ("update", "setdefault", "__ior__")


def _managed_dict_class(cls: Any, spec: Optional[_Spec]) -> type:
    """A dict subclass of `cls` that indexes every write and touches on `[]` and `get`.

    Methods the class overrides keep running: a user `get` is called and then touches; a user
    `update`, `setdefault` or `|=` is called and what it changed is then indexed (O(n)), since
    it may write through `dict` methods memguard cannot see.
    """
    below = _defined_below_managed(cls)
    overrides: dict[str, Any] = {method: _absorbing(getattr(cls, method))
                                 for method in _ABSORBED if method in below
                                 and not getattr(getattr(cls, method), "_memguard_wrapped", False)}
    if getattr(cls, "_memguard_spec", None) is not None:  # managed already: a new spec only
        return _finish(cls, type(cls.__name__, (cls,), {"__slots__": (), **overrides}), spec)
    namespace: dict[str, Any] = {
        "__slots__": _slots_for(cls, "_memguard", "_memguard_reads"),
        "__init__": _dict_init(cls.__init__, cls.__delitem__),
        "__reduce__": _plain_copy,
        **_dict_reads(cls),
        **_indexed_writes(cls.__setitem__, cls.__delitem__,
                          _dict_landed if "__setitem__" in below else None),
        **_dict_removals(cls),
        **_dict_bulk_writes(cls),
        **overrides,
    }
    managed: Any = _finish(cls, type(cls.__name__, (cls,), namespace), spec)
    type.__setattr__(managed, "__init_subclass__", _following_subclasses(managed))
    return cast(type, managed)


def _dict_init(base_init: Callable[..., None],
               base_delitem: Callable[[Any, Key], None]) -> Callable[..., None]:
    """`__init__` of a managed dict class: handle first, then the class's own `__init__`."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        store_spec = type(self)._memguard_spec  # None for a mapping= dict: its owner attaches
        if store_spec is None:
            base_init(self, *args, **kwargs)
            return
        store_handle = _open_store(self, store_spec, Backend(
            self, get=dict_get, delete=base_delitem, keys=dict.keys))
        base_init(self, *args, **kwargs)
        _enroll(store_handle, self)  # dict.__init__ stores without __setitem__

    return __init__


def _plain_copy(self: Any) -> tuple[Any, ...]:
    # A copy (copy, deepcopy, pickle) is a plain dict: it must not share the store's index.
    return (dict, (dict.copy(self),))


def _dict_reads(cls: Any) -> dict[str, Any]:
    """`__getitem__` and `get`: the read path, which touches without the lock.

    Two C calls move the key to the recent end of the read set (pop, then insert), so the
    order of reads is exact (see JobIndex). `get` is built for the class at hand (its own
    `get` or none), so the common case pays no test for the other.
    """
    base_getitem = cls.__getitem__
    dict_get = dict.get  # never calls __missing__, unlike dict.__getitem__

    def __getitem__(self: Any, key: Key) -> Any:
        value = base_getitem(self, key)
        reads = self._memguard_reads
        reads.pop(key, None)
        reads[key] = None
        return value

    def get(self: Any, key: Key, default: Any = None) -> Any:
        value = dict_get(self, key, _MISSING)
        if value is _MISSING:
            return default
        reads = self._memguard_reads
        reads.pop(key, None)
        reads[key] = None
        return value

    user_get = cls.get

    def get_then_touch(self: Any, key: Key, default: Any = None) -> Any:
        value = user_get(self, key, default)
        if dict.__contains__(self, key):
            reads = self._memguard_reads
            reads.pop(key, None)
            reads[key] = None
        return value

    return {"__getitem__": __getitem__,
            "get": get if user_get is dict.get else get_then_touch}


def _dict_removals(cls: Any) -> dict[str, Any]:
    """`pop`, `popitem` and `clear`: the class's own, then the index follows under the lock."""
    base_pop, base_popitem, base_clear = cls.pop, cls.popitem, cls.clear

    def pop(self: Any, key: Key, *default: Any) -> Any:
        handle: Optional[LocalHandle] = self._memguard
        if handle is None:
            return base_pop(self, key, *default)
        with handle.lock:
            value = base_pop(self, key, *default)
            if self._memguard is handle:
                handle.index.remove(key)
        return value

    def popitem(self: Any, *args: Any, **kwargs: Any) -> tuple[Key, Any]:
        handle: Optional[LocalHandle] = self._memguard
        if handle is None:
            return base_popitem(self, *args, **kwargs)  # type: ignore[no-any-return]
        with handle.lock:
            key, value = base_popitem(self, *args, **kwargs)
            if self._memguard is handle:
                handle.index.remove(key)
        return key, value

    def clear(self: Any) -> None:
        handle: Optional[LocalHandle] = self._memguard
        if handle is None:
            base_clear(self)
            return
        with handle.lock:
            base_clear(self)
            if self._memguard is handle:
                handle.index.clear()

    return {"pop": pop, "popitem": popitem, "clear": clear}


def _dict_bulk_writes(cls: Any) -> dict[str, Any]:
    """`setdefault`, `update` and `|=`: each stored job goes through the indexed write path."""
    base_setitem = cls.__setitem__
    dict_get = dict.get

    def setdefault(self: Any, key: Key, default: Any = None) -> Any:
        handle: Optional[LocalHandle] = self._memguard
        if handle is None:
            return dict.setdefault(self, key, default)
        with handle.lock:
            value = dict_get(self, key, _MISSING)
            if value is not _MISSING:
                handle.index.touch(key)
                return value
            base_setitem(self, key, default)
            if self._memguard is not handle:
                return default
            victims = handle.stored_locked(key, default)
            handle.manager.intake.count(handle.index.intake_bytes)  # a burst wakes the monitor
        if victims:
            handle.finish_insert(victims)
        return default

    return {"setdefault": setdefault, "update": _update, "__ior__": _update_in_place}


def _update(self: Any, *args: Any, **kwargs: Any) -> None:
    """`dict.update`, one `self[key] = value` at a time (so each write is indexed)."""
    if len(args) > 1:
        raise TypeError(f"update expected at most 1 argument, got {len(args)}")
    source: Any = args[0] if args else ()
    if hasattr(source, "keys"):  # as dict.update does: keys(), then [key] for each
        for key in source.keys():  # noqa: SIM118 (keys() is what dict.update calls)
            self[key] = source[key]
    else:
        for pair in source:
            key, value = pair  # a pair that is not two items: ValueError, as dict says
            self[key] = value
    for key, value in kwargs.items():
        self[key] = value


def _update_in_place(self: Any, other: Any) -> Any:
    """`self |= other`: `update`, then the store itself."""
    self.update(other)
    return self


def _dict_landed(store: Any, key: Key, value: Any) -> Any:
    return dict.get(store, key, _MISSING)


def _following_subclasses(managed: Any) -> classmethod:  # type: ignore[type-arg]
    """`__init_subclass__` of a managed dict class: see `_follow_subclass`."""

    def __init_subclass__(subclass: Any, /, **kwargs: Any) -> None:
        super(managed, subclass).__init_subclass__(**kwargs)
        _follow_subclass(subclass)

    return classmethod(__init_subclass__)


def _follow_subclass(subclass: Any) -> None:
    """A subclass that is not decorated itself may still override write methods with ones
    that write through `dict` directly; wrap them so the index follows what they did."""
    def needs_wrapping(name: str) -> Any:
        own = vars(subclass).get(name)
        if own is None or own is getattr(dict, name, None):  # a plain dict method: detached
            return None
        return None if getattr(own, "_memguard_wrapped", False) else own

    for method in _ABSORBED:
        own = needs_wrapping(method)
        if own is not None:
            setattr(subclass, method, _absorbing(own))
    own_setitem = needs_wrapping("__setitem__")
    if own_setitem is not None:
        writes = _indexed_writes(own_setitem, subclass.__delitem__, _dict_landed)
        type.__setattr__(subclass, "__setitem__", writes["__setitem__"])


def _defined_below_managed(cls: type) -> set[str]:
    """Names defined by `cls` and its bases up to (not including) a managed class or dict."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "_memguard_spec" in vars(klass) or klass is dict:
            break
        names.update(vars(klass))
    return names


def _absorbing(user_method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a store class's own write method, then index what it changed.

    It may write through `dict` directly, which the index cannot see: compare shallow copies
    from before and after (O(n)), so new and replaced jobs are stored with their bounds
    enforced and vanished ones removed.
    """

    @functools.wraps(user_method)
    def absorbing(self: Any, *args: Any, **kwargs: Any) -> Any:
        handle: Optional[LocalHandle] = self._memguard
        before = dict.copy(self)
        try:
            return user_method(self, *args, **kwargs)
        finally:
            if handle is not None and self._memguard is handle:
                handle.absorb(before, dict.copy(self))

    absorbing._memguard_wrapped = True  # type: ignore[attr-defined]
    return absorbing
