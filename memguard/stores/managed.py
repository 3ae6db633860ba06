"""`@managed_store`: turn a job store class into one whose side index is always exact.

The decorator returns a subclass of the class it is given (same name, module and qualname),
whose write paths keep a `JobIndex` in step with the data and whose reads touch the job. Each
instance gets a `StoreHandle`, registered with its manager while the instance lives.
"""

from __future__ import annotations

import copyreg
import functools
import operator
import re
import types
from collections.abc import ItemsView, Iterator, Mapping, MutableMapping, ValuesView
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Optional,
    TypeVar,
    Union,
    cast,
    overload,
)

import attrs

from memguard.errors import StoreDefinitionError
from memguard.index.job_index import Key
from memguard.policy.options import StorePolicy
from memguard.policy.units import show_value
from memguard.stores import registry
from memguard.stores.handle import StoreHandle, _Backend, _dict_get

if TYPE_CHECKING:
    from memguard.manager import MemoryManager
    from memguard.stores.registry import StoreHost


C = TypeVar("C", bound=type)
_MISSING: Any = object()


# -- the decorator ------------------------------------------------------------------------------

_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """`DiagramJobs` -> `diagram_jobs`, `IaCJobStore` -> `ia_c_job_store`."""
    return _SNAKE.sub("_", name).lower()


@attrs.frozen
class _Spec:
    name: str
    declared: Mapping[str, Any]
    manager: Optional[MemoryManager]


@overload
def managed_store(maybe_cls: C) -> C: ...
@overload
def managed_store(
    maybe_cls: None = None,
    *,
    name: Optional[str] = None,
    mapping: Optional[str] = None,
    max_age: Union[float, str, None] = None,
    max_idle: Union[float, str, None] = None,
    max_jobs: Optional[int] = None,
    max_bytes: Union[int, str, None] = None,
    active: Optional[Callable[[Any], bool]] = None,
    release: tuple[str, ...] = ("result",),
    size: Optional[Callable[[Any], int]] = None,
    order: str = "lru",
    manager: Optional[MemoryManager] = None,
) -> Callable[[C], C]: ...
def managed_store(
    maybe_cls: Optional[C] = None,
    *,
    name: Optional[str] = None,
    mapping: Optional[str] = None,
    max_age: Union[float, str, None] = None,
    max_idle: Union[float, str, None] = None,
    max_jobs: Optional[int] = None,
    max_bytes: Union[int, str, None] = None,
    active: Optional[Callable[[Any], bool]] = None,
    release: tuple[str, ...] = ("result",),
    size: Optional[Callable[[Any], int]] = None,
    order: str = "lru",
    manager: Optional[MemoryManager] = None,
) -> Union[C, Callable[[C], C]]:
    """Manage the jobs of a store class: bounded by the given rules and the policy.

    Works on dict subclasses, `MutableMapping` subclasses, and (with `mapping="attr"`) classes
    that keep their jobs in a dict attribute. Raises `StoreDefinitionError` at decoration time
    on a class it cannot manage or on contradictory options.
    """
    given = {"max_age": max_age, "max_idle": max_idle, "max_jobs": max_jobs,
             "max_bytes": max_bytes, "active": active, "size": size}
    declared: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    releases = (release,) if isinstance(release, str) else release
    if releases is not None and tuple(releases) != ("result",):
        declared["release"] = tuple(releases)
    if order != "lru":
        declared["order"] = order

    def decorate(cls: C) -> C:
        return _decorate(cls, name, mapping, declared, manager)  # type: ignore[return-value]

    return decorate if maybe_cls is None else decorate(maybe_cls)


def _decorate(cls: Any, name: Optional[str], mapping: Optional[str],
              declared: dict[str, Any], manager: Optional[MemoryManager]) -> type:
    """The managed subclass of `cls`, once its options are checked one by one."""
    if not isinstance(cls, type):
        raise StoreDefinitionError(f"@managed_store decorates classes, not {cls!r}")
    for key, value in declared.items():  # one at a time, so the error names the option
        try:
            StorePolicy(**{key: value})
        except (ValueError, TypeError) as error:
            raise StoreDefinitionError(
                f"@managed_store on {cls.__qualname__}: {key}={show_value(value)}: "
                f"{error}") from None
    try:
        StorePolicy(**declared)
    except (ValueError, TypeError) as error:
        raise StoreDefinitionError(f"@managed_store on {cls.__qualname__}: {error}") from None
    spec = _Spec(name or snake_case(cls.__name__), declared, manager)
    # A class that manages its own jobs (memguard.redis.RedisStore) builds its managed
    # subclass itself; this module never imports it (layers).
    manage = getattr(cls, "__memguard_manage__", None)
    if manage is not None:
        if mapping is not None:
            raise StoreDefinitionError(
                f"@managed_store on {cls.__qualname__}: mapping={mapping!r} does not apply "
                "to a store class that manages its own jobs")
        return manage(spec)  # type: ignore[no-any-return]
    if mapping is not None:
        return _with_mapping_attribute(cls, mapping, spec)
    if issubclass(cls, dict):
        return _managed_dict_class(cls, spec)
    if issubclass(cls, MutableMapping):
        return _managed_mapping_class(cls, spec)
    raise StoreDefinitionError(
        f"@managed_store on {cls.__qualname__}: it is neither a dict nor a MutableMapping "
        "subclass; name the dict attribute that holds its jobs with mapping='attr'")


def _manager_of(spec: _Spec) -> StoreHost:
    return spec.manager if spec.manager is not None else registry.default_host()


def _new_handle(spec: _Spec, backend: _Backend) -> StoreHandle:
    manager = _manager_of(spec)
    try:
        handle = StoreHandle(spec.name, manager=manager, declared=spec.declared, backend=backend)
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

def _open_store(store: Any, spec: _Spec, backend: _Backend) -> StoreHandle:
    """Give a new store instance its handle (before the class's own `__init__` fills it)."""
    store_handle = _new_handle(spec, backend)
    attach(store, store_handle)
    return store_handle


def _enroll(store_handle: StoreHandle, store: Any) -> None:
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
        handle: Optional[StoreHandle] = self._memguard
        if handle is None:  # detached
            return base_setitem(self, key, value)
        with handle.lock:
            base_setitem(self, key, value)
            if self._memguard is not handle:
                return
            stored = value if landed is None else landed(self, key, value)
            if stored is not _MISSING:  # what the class really keeps under `key`
                victims = handle.stored_locked(key, stored)
            else:
                victims = handle.follow_locked(type(self), key, value)
        if victims:  # release and callbacks outside the lock
            handle.finish_insert(victims)

    def __delitem__(self: Any, key: Key) -> None:
        handle: Optional[StoreHandle] = self._memguard
        if handle is None:
            return base_delitem(self, key)
        with handle.lock:
            base_delitem(self, key)
            if self._memguard is handle:
                handle.index.remove(key)

    __setitem__._memguard_wrapped = True  # type: ignore[attr-defined]
    return {"__setitem__": __setitem__, "__delitem__": __delitem__}


# -- dict stores ------------------------------------------------------------------------------

class _NoReads(dict):  # type: ignore[type-arg]
    """The read set of a dict no longer attached to a store: it keeps nothing."""

    __slots__ = ()

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


_NO_READS = _NoReads()

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
        store_handle = _open_store(self, store_spec, _Backend(
            self, get=_dict_get, delete=base_delitem, keys=dict.keys))
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
        handle: Optional[StoreHandle] = self._memguard
        if handle is None:
            return base_pop(self, key, *default)
        with handle.lock:
            value = base_pop(self, key, *default)
            if self._memguard is handle:
                handle.index.remove(key)
        return value

    def popitem(self: Any, *args: Any, **kwargs: Any) -> tuple[Key, Any]:
        handle: Optional[StoreHandle] = self._memguard
        if handle is None:
            return base_popitem(self, *args, **kwargs)  # type: ignore[no-any-return]
        with handle.lock:
            key, value = base_popitem(self, *args, **kwargs)
            if self._memguard is handle:
                handle.index.remove(key)
        return key, value

    def clear(self: Any) -> None:
        handle: Optional[StoreHandle] = self._memguard
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
        handle: Optional[StoreHandle] = self._memguard
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
        handle: Optional[StoreHandle] = self._memguard
        before = dict.copy(self)
        try:
            return user_method(self, *args, **kwargs)
        finally:
            if handle is not None and self._memguard is handle:
                handle.absorb(before, dict.copy(self))

    absorbing._memguard_wrapped = True  # type: ignore[attr-defined]
    return absorbing


def attach(store: Any, handle: Optional[StoreHandle]) -> None:
    """Give `store` its handle (and managed dicts the read set itself, for a read path of two
    C calls without an attribute chain)."""
    store._memguard = handle
    if hasattr(type(store), "_memguard_reads"):
        store._memguard_reads = _NO_READS if handle is None else handle.index.reads


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


def _mapping_backend(cls: Any, store: Any) -> _Backend:
    """How the index reaches the jobs of a MutableMapping store: its class's own methods."""
    return _Backend(store, get=cls.__getitem__, delete=cls.__delitem__, keys=cls.__iter__)


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
        handle: StoreHandle = self._memguard
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


# -- mapping= stores: a dict attribute holds the jobs ---------------------------------------------

#: The dict class that backs a `mapping=` attribute: indexes writes into its owner's handle.
ManagedDict = _managed_dict_class(dict, None)
ManagedDict.__qualname__ = ManagedDict.__name__ = "ManagedDict"
ManagedDict.__module__ = __name__


class _DetachedDict(ManagedDict):  # type: ignore[valid-type,misc]
    """What a replaced `mapping=` dict becomes: a plain dict again, no longer writing into
    the store's index (a subclass with no slots of its own, so its class can be switched)."""

    __slots__ = ()
    __getitem__ = dict.__getitem__
    get = dict.get
    __setitem__ = dict.__setitem__
    __delitem__ = dict.__delitem__
    pop = dict.pop
    popitem = dict.popitem
    setdefault = dict.setdefault
    update = dict.update
    __ior__ = dict.__ior__
    clear = dict.clear


class _MappingAttribute(property):
    """The `mapping=` attribute: reading it is C code only, assigning it adopts the dict.

    Every accessor of a `mapping=` store reads `self.jobs`, so the read is a `property`
    whose getter is an `operator.attrgetter` of the instance attribute that really holds
    the dict (`_memguard_<name>`): about 25 ns, against 70-80 ns for a descriptor written
    in Python. Assigning (`self.jobs = {...}`, `object.__setattr__` too) goes through
    `__set__` below, which adopts the new dict.
    """

    def __init__(self, attribute: str, spec: _Spec) -> None:
        self.attribute = attribute
        self.holder = f"_memguard_{attribute}"
        self.spec = spec
        # __set__ and __delete__ below take over from the property's own (in C, __get__ stays)
        super().__init__(operator.attrgetter(self.holder),
                         doc=f"The jobs of store {spec.name!r}, managed by memguard.")

    def __set__(self, owner: Any, value: Any) -> None:
        """Adopt `value`: jobs it keeps keep their age and pins; the old dict is detached."""
        if not isinstance(value, Mapping):
            raise TypeError(
                f"{type(owner).__qualname__}.{self.attribute} holds the jobs of store "
                f"{self.spec.name!r} and must be a dict; got {type(value).__name__}")
        handle = _owner_handle(owner, self)
        jobs = ManagedDict()
        attach(jobs, handle)
        with handle.lock:
            dict.update(jobs, value)
            old = owner.__dict__.get(self.holder)
            owner.__dict__[self.holder] = jobs
            handle.switch_backend(_Backend(jobs, get=_dict_get, delete=dict.__delitem__,
                                           keys=dict.keys))
            handle.reconcile()
            for key in handle.index.created:  # the same key may now hold another job
                if old is None or dict.get(old, key, _MISSING) is not dict.__getitem__(jobs, key):
                    handle.index.reweigh(key, dict.__getitem__(jobs, key))
            if type(old) is ManagedDict and old is not jobs:
                old.__class__ = _DetachedDict  # new calls are plain dict calls ...
                attach(old, None)  # ... and calls already inside see it is detached

    def __delete__(self, owner: Any) -> None:
        raise AttributeError(f"the job mapping {self.attribute!r} of a managed store stays")


def _owner_handle(owner: Any, descriptor: _MappingAttribute) -> StoreHandle:
    handle: Optional[StoreHandle] = owner.__dict__.get("_memguard")
    if handle is None:
        handle = _new_handle(descriptor.spec, _Backend(
            {}, get=_dict_get, delete=dict.__delitem__, keys=dict.keys))
        owner.__dict__["_memguard"] = handle
    return handle


def _with_mapping_attribute(cls: Any, attribute: str, spec: _Spec) -> type:
    """A subclass of `cls` whose `attribute` dict is a managed job store."""
    if not attribute.isidentifier():
        raise StoreDefinitionError(
            f"@managed_store on {cls.__qualname__}: mapping={attribute!r} is not an attribute "
            "name")
    if not any("__dict__" in vars(k) for k in cls.__mro__ if k is not object):
        raise StoreDefinitionError(
            f"@managed_store on {cls.__qualname__}: mapping={attribute!r} needs instances with "
            "a __dict__ (the class defines __slots__ without it)")
    if getattr(cls, "_memguard_spec", None) is not None:
        raise StoreDefinitionError(
            f"@managed_store on {cls.__qualname__}: it is a managed store already; with "
            "mapping= decorate one class of the hierarchy only")
    descriptor = _MappingAttribute(attribute, spec)
    base_init = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        base_init(self, *args, **kwargs)
        handle = _owner_handle(self, descriptor)
        handle.manager.register(handle, self)

    namespace = {attribute: descriptor, "__init__": __init__,
                 **_plain_readers(cls, attribute)}
    return _finish(cls, type(cls.__name__, (cls,), namespace), spec)


def _plain_readers(cls: type, attribute: str) -> dict[str, Any]:
    """The `@touches` methods of `cls` whose whole body reads the job through the managed
    mapping (`return self.jobs.get(job_id)`), undecorated.

    That read touches the job already, so the wrapper's touch would be a second one: the
    managed class gets the plain function instead (one touch per call, nothing added to the
    bare method). `@touches` tells which are such readers (`__memguard_plain_read__`); this
    module never imports it (layers).
    """
    plain: dict[str, Any] = {}
    seen: set[str] = set()
    for klass in cls.__mro__:  # the method each name resolves to, as attribute lookup does
        for name, value in vars(klass).items():
            if name in seen:
                continue
            seen.add(name)
            is_plain_read = (getattr(value, "__memguard_plain_read__", None)
                             if isinstance(value, types.FunctionType) else None)
            if is_plain_read is not None and is_plain_read(value, attribute):
                plain[name] = value.__wrapped__
    return plain


# -- finding a store's handle ----------------------------------------------------------------------

def handle(store: Any) -> StoreHandle:
    """The `StoreHandle` of a managed store instance (or of a registered plain dict)."""
    if isinstance(store, StoreHandle):
        return store
    found = getattr(store, "_memguard", None)
    if isinstance(found, StoreHandle):
        return found
    for host in registry.hosts():
        plain = host.plain_handle(store)
        if isinstance(plain, StoreHandle):
            return plain
    raise TypeError(
        f"{type(store).__qualname__} is not a managed store: decorate its class with "
        "@managed_store or register it with manager.setup_job_store_cleanup()")
