"""`@managed_store`: turn a job store class into one whose side index is always exact.

The decorator returns a subclass of the class it is given (same name, module and qualname),
whose write paths keep a `JobIndex` in step with the data and whose reads touch the job. Each
instance gets a `StoreHandle`, registered with its manager while the instance lives.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import weakref
from collections import Counter
from collections.abc import ItemsView, Iterator, Mapping, MutableMapping, ValuesView
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union, cast, overload

import attrs

from memguard._sizing import estimate_size
from memguard.errors import StoreDefinitionError
from memguard.pipeline import CleanupReport, EvictionEvent, Pipeline, pipeline_for
from memguard.policy import Policy, StorePolicy
from memguard.rules import Cause, MaxBytes, MaxJobs, Pass, Rule
from memguard.tracking import JobIndex, Key

if TYPE_CHECKING:
    from memguard._manager import MemoryManager

logger = logging.getLogger("memguard")

C = TypeVar("C", bound=type)
_MISSING: Any = object()


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


@attrs.frozen
class _Victim:
    key: Key
    job: Any
    cause: Cause
    size: Optional[int]


class _Backend:
    """Raw access to a store's data, bypassing the managed methods (and so the index)."""

    needs_sync = False

    def __init__(self, store: Any, *, get: Callable[[Any, Key], Any],
                 delete: Callable[[Any, Key], None], keys: Callable[[Any], Any]) -> None:
        try:
            self._ref: Callable[[], Any] = weakref.ref(store)
        except TypeError:  # plain dicts cannot be weakly referenced; they hold no handle either
            self._ref = lambda: store
        self._get, self._delete, self._keys = get, delete, keys

    def get(self, key: Key) -> Any:
        store = self._ref()
        if store is None:
            raise KeyError(key)
        return self._get(store, key)

    def delete(self, key: Key) -> None:
        store = self._ref()
        if store is not None:
            self._delete(store, key)

    def list_keys(self) -> list[Key]:
        store = self._ref()
        return [] if store is None else list(self._keys(store))


def _dict_get(store: Any, key: Key) -> Any:
    value = dict.get(store, key, _MISSING)  # dict.get never calls __missing__
    if value is _MISSING:
        raise KeyError(key)
    return value


class StoreHandle:
    """The control surface of one store instance: policy, touch, pins, stats, cleanup."""

    def __init__(self, name: str, *, manager: MemoryManager, declared: Mapping[str, Any],
                 backend: _Backend) -> None:
        self.name = name
        self.manager = manager
        self._declared = dict(declared)
        self._backend = backend
        self.index = JobIndex(job_of=backend.get, active=lambda job: False, sizer=estimate_size)
        self.evictions: Counter[str] = Counter()
        self.policy = StorePolicy()
        self.pipeline = Pipeline()
        self._insert_rules: Optional[Pipeline] = None
        self._max_jobs: Optional[int] = None
        self._max_bytes: Optional[int] = None
        self.apply_policy(manager.policy)

    def __repr__(self) -> str:
        return f"<StoreHandle {self.name!r} jobs={len(self.index)}>"

    @property
    def lock(self) -> threading.RLock:
        return self.index.lock

    # -- policy ----------------------------------------------------------------------------

    def effective_policy(self, policy: Policy) -> StorePolicy:
        """What `policy` makes of this store, given its decorator arguments (may raise)."""
        return policy.store_policy(self.name, self._declared)

    def apply_policy(self, policy: Policy, effective: Optional[StorePolicy] = None) -> None:
        """Switch to `policy` at once; the next write and the next pass use it."""
        store_policy = effective or self.effective_policy(policy)
        pipeline = pipeline_for(store_policy, policy.rules,
                                emergency_order=policy.memory.emergency_order)
        on_insert: list[Rule] = []
        if "count" in policy.rules and store_policy.max_jobs is not None:
            on_insert.append(MaxJobs(store_policy.max_jobs))
        if "bytes" in policy.rules and store_policy.max_bytes is not None:
            on_insert.append(MaxBytes(store_policy.max_bytes))
        with self.lock:
            self.policy = store_policy
            self.pipeline = pipeline
            self.index.active = store_policy.active
            self.index.sizer = store_policy.size or estimate_size
            self._insert_rules = Pipeline(tuple(on_insert)) if on_insert else None
            self._max_jobs = store_policy.max_jobs if "count" in policy.rules else None
            self._max_bytes = store_policy.max_bytes if "bytes" in policy.rules else None

    def declare(self, **rules: Any) -> None:
        """Add decorator-level rules (used by `setup_job_store_cleanup`) and re-apply."""
        self._declared.update({k: v for k, v in rules.items() if v is not None})
        self.apply_policy(self.manager.policy)

    # -- public operations ------------------------------------------------------------------

    def touch(self, key: Key) -> None:
        """Mark `key` as just used. O(1); an unknown key is ignored."""
        if self._backend.needs_sync and key not in self.index:
            self._adopt(key)
        self.index.touch(key)

    def pin(self, key: Key) -> None:
        """Keep `key` from eviction until as many `unpin` calls; pins nest."""
        with self.lock:
            self.index.pins[key] = self.index.pins.get(key, 0) + 1

    def unpin(self, key: Key) -> None:
        with self.lock:
            count = self.index.pins.get(key, 0)
            if count <= 1:
                self.index.pins.pop(key, None)
                if key in self.index:
                    self.index.unweighed[key] = None  # weigh it at the next pass
            else:
                self.index.pins[key] = count - 1

    @contextlib.contextmanager
    def in_use(self, key: Key) -> Iterator[None]:
        """Pin `key` for the duration of a `with` block."""
        self.pin(key)
        try:
            yield
        finally:
            self.unpin(key)

    def evict(self, key: Key) -> Optional[EvictionEvent]:
        """Evict `key` now (cause `explicit`), active or not; None if it is not stored."""
        with self.lock:
            victim = self.evict_locked(key, Cause.EXPLICIT)
        events = self.finish_evictions([victim] if victim else [])
        return events[0] if events else None

    def cleanup(self, *, now: Optional[float] = None) -> CleanupReport:
        """Run one periodic pass of this store's pipeline and report it."""
        start = self.manager.clock() if now is None else now
        events = self.run_pass(Pass(now=start, order=self.policy.order))
        return CleanupReport.from_events("periodic", events, started_at=start)

    def run_pass(self, ctx: Pass) -> list[EvictionEvent]:
        return self.pipeline.run(self, ctx)

    def stats(self) -> StoreStats:
        """Jobs, active jobs, pins, weighed bytes and evictions by cause (O(jobs))."""
        with self.lock:
            self._sync()
            keys = list(self.index.created)
            active = 0
            for key in keys:
                try:
                    job = self._backend.get(key)
                except KeyError:
                    continue
                active += self.index.is_active(key, job)
            return StoreStats(
                name=self.name, jobs=len(keys), active=active, pinned=len(self.index.pins),
                bytes=self.index.total_bytes, unweighed=len(self.index.unweighed),
                evictions=dict(self.evictions),
            )

    def recency(self) -> list[Key]:
        """Job keys, least recently used first."""
        return self.index.recency()

    # -- internals: called by the store classes and the pipeline ------------------------------

    def stored_locked(self, key: Key, job: Any) -> list[_Victim]:
        """Index a write and enforce the insert-time bounds; returns what they evicted."""
        self.index.add(key, job, self.manager.clock())
        rules = self._insert_rules
        if rules is None or not self._over_bounds():
            return []
        victims = []
        ctx = Pass(now=self.manager.clock(), order=self.policy.order)
        for victim_key, cause in rules(self.index, ctx):
            victim = self.evict_locked(victim_key, cause)
            if victim is not None:
                victims.append(victim)
        return victims

    def _over_bounds(self) -> bool:
        return (self._max_jobs is not None and len(self.index) > self._max_jobs) or (
            self._max_bytes is not None and self.index.total_bytes > self._max_bytes)

    def evict_locked(self, key: Key, cause: Cause) -> Optional[_Victim]:
        try:
            job = self._backend.get(key)
            self._backend.delete(key)
        except KeyError:
            self.index.remove(key)
            return None
        size = self.index.remove(key)
        return _Victim(key, job, cause, size)

    def finish_evictions(self, victims: list[_Victim]) -> list[EvictionEvent]:
        """Release the victims' big fields and tell the listeners; call without the lock."""
        events = []
        for victim in victims:
            _release(victim.job, self.policy.release, victim.key)
            self.evictions[victim.cause.value] += 1
            events.append(EvictionEvent(self.name, victim.key, victim.cause, victim.size))
        if events:
            self.manager.notify_evictions(events)
        return events

    def prepare_pass(self, now: float) -> None:
        """Before a pass (lock held): catch up with plain dicts, weigh finished jobs."""
        self._sync()
        self.index.weigh_pending()

    def adopt_existing(self) -> None:
        """Index keys written without going through the managed methods (`dict.__init__`)."""
        with self.lock:
            now = self.manager.clock()
            for key in self._backend.list_keys():
                if key not in self.index:
                    self.index.add(key, self._backend.get(key), now)

    def _adopt(self, key: Key) -> None:
        with self.lock:
            try:
                job = self._backend.get(key)
            except KeyError:
                return
            if key not in self.index:
                self.index.add(key, job, self.manager.clock())

    def _sync(self) -> None:
        """Plain dicts cannot tell us about writes: reconcile keys (O(n), plain dicts only)."""
        if not self._backend.needs_sync:
            return
        present = self._backend.list_keys()
        now = self.manager.clock()
        for key in set(self.index.created).difference(present):
            self.index.remove(key)
        for key in present:
            if key not in self.index:
                self.index.add(key, self._backend.get(key), now)
            elif key in self.index.unweighed:
                pass  # weighed by weigh_pending once inactive


def _release(job: Any, fields: tuple[str, ...], key: Key) -> None:
    """Set each release field to None (kept present) so its memory goes even if job is held."""
    for field in fields:
        try:
            if isinstance(job, MutableMapping):
                if field in job:
                    job[field] = None
            elif hasattr(job, field):
                setattr(job, field, None)
        except Exception:
            logger.warning("memguard: could not release %r of evicted job %r", field, key,
                           exc_info=True)


# -- the decorator ------------------------------------------------------------------------------

_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_DECLARABLE = ("max_age", "max_idle", "max_jobs", "max_bytes", "active", "release", "size",
               "order")


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
    if tuple(release) != ("result",):
        declared["release"] = tuple(release)
    if order != "lru":
        declared["order"] = order

    def decorate(cls: C) -> C:
        if not isinstance(cls, type):
            raise StoreDefinitionError(f"@managed_store decorates classes, not {cls!r}")
        for key, value in declared.items():  # one at a time, so the error names the option
            try:
                StorePolicy(**{key: value})
            except (ValueError, TypeError) as error:
                raise StoreDefinitionError(
                    f"@managed_store on {cls.__qualname__}: {key}={value!r}: {error}") from None
        try:
            StorePolicy(**declared)
        except (ValueError, TypeError) as error:
            raise StoreDefinitionError(f"@managed_store on {cls.__qualname__}: {error}") from None
        spec = _Spec(name or snake_case(cls.__name__), declared, manager)
        if mapping is not None:
            return _with_mapping_attribute(cls, mapping, spec)  # type: ignore[return-value]
        if issubclass(cls, dict):
            return _managed_dict_class(cls, spec)  # type: ignore[return-value]
        if issubclass(cls, MutableMapping):
            return _managed_mapping_class(cls, spec)  # type: ignore[return-value]
        raise StoreDefinitionError(
            f"@managed_store on {cls.__qualname__}: it is neither a dict nor a MutableMapping "
            "subclass; name the dict attribute that holds its jobs with mapping='attr'")

    return decorate if maybe_cls is None else decorate(maybe_cls)


def _manager_of(spec: _Spec) -> MemoryManager:
    if spec.manager is not None:
        return spec.manager
    from memguard._manager import manager

    return manager


def _new_handle(spec: _Spec, backend: _Backend) -> StoreHandle:
    manager = _manager_of(spec)
    try:
        handle = StoreHandle(spec.name, manager=manager, declared=spec.declared, backend=backend)
    except (ValueError, TypeError) as error:
        raise StoreDefinitionError(f"store {spec.name!r}: {error}") from None
    return handle


def _finish(cls: type, managed: type) -> type:
    for attribute in ("__module__", "__qualname__", "__doc__"):
        setattr(managed, attribute, getattr(cls, attribute))
    managed.__name__ = cls.__name__
    managed.__wrapped__ = cls  # type: ignore[attr-defined]
    return managed


def _slots_for(cls: type, *names: str) -> tuple[str, ...]:
    has_weakref = any("__weakref__" in vars(k) for k in cls.__mro__)
    return names + (() if has_weakref else ("__weakref__",))


def _managed_dict_class(cls: Any, spec: Optional[_Spec]) -> type:
    """A dict subclass of `cls` that indexes every write and touches on `[]` and `get`."""
    base_init = cls.__init__
    base_getitem = cls.__getitem__
    base_setitem = cls.__setitem__
    base_delitem = cls.__delitem__
    base_pop = cls.pop
    base_popitem = cls.popitem
    base_clear = cls.clear
    dict_get = dict.get  # never calls __missing__, unlike dict.__getitem__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if spec is not None:  # a nested dict (mapping=) is attached by its owner instead
            handle = _new_handle(spec, _Backend(self, get=_dict_get, delete=base_delitem,
                                                keys=dict.keys))
            attach(self, handle)
        base_init(self, *args, **kwargs)
        if spec is not None:
            self._memguard.adopt_existing()
            self._memguard.manager.register(self._memguard, self)

    def __getitem__(self: Any, key: Key) -> Any:
        value = base_getitem(self, key)
        self._memguard_touch(key)
        return value

    def get(self: Any, key: Key, default: Any = None) -> Any:
        value = dict_get(self, key, _MISSING)
        if value is _MISSING:
            return default
        self._memguard_touch(key)
        return value

    def __setitem__(self: Any, key: Key, value: Any) -> None:
        handle: StoreHandle = self._memguard
        with handle.lock:
            base_setitem(self, key, value)
            victims = handle.stored_locked(key, value)
        if victims:
            handle.finish_evictions(victims)

    def __delitem__(self: Any, key: Key) -> None:
        handle: StoreHandle = self._memguard
        with handle.lock:
            base_delitem(self, key)
            handle.index.remove(key)

    def pop(self: Any, key: Key, *default: Any) -> Any:
        handle: StoreHandle = self._memguard
        with handle.lock:
            value = base_pop(self, key, *default)
            handle.index.remove(key)
        return value

    def popitem(self: Any) -> tuple[Key, Any]:
        handle: StoreHandle = self._memguard
        with handle.lock:
            key, value = base_popitem(self)
            handle.index.remove(key)
        return key, value

    def setdefault(self: Any, key: Key, default: Any = None) -> Any:
        with self._memguard.lock:
            if dict.__contains__(self, key):
                return self[key]
            self[key] = default
            return default

    def update(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > 1:
            raise TypeError(f"update expected at most 1 argument, got {len(args)}")
        source: Any = args[0] if args else ()
        pairs = ((key, source[key]) for key in source) if hasattr(source, "keys") else source
        for key, value in pairs:
            self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def __ior__(self: Any, other: Any) -> Any:
        self.update(other)
        return self

    def clear(self: Any) -> None:
        handle: StoreHandle = self._memguard
        with handle.lock:
            base_clear(self)
            handle.index.clear()

    namespace = {
        "__slots__": _slots_for(cls, "_memguard", "_memguard_touch"),
        "__init__": __init__, "__getitem__": __getitem__, "get": get,
        "__setitem__": __setitem__, "__delitem__": __delitem__, "pop": pop, "popitem": popitem,
        "setdefault": setdefault, "update": update, "__ior__": __ior__, "clear": clear,
    }
    return _finish(cls, type(cls.__name__, (cls,), namespace))


def attach(store: Any, handle: StoreHandle) -> None:
    """Give `store` its handle (and managed dicts the bound touch, for a one-call read path)."""
    store._memguard = handle
    if hasattr(type(store), "_memguard_touch"):
        store._memguard_touch = handle.index.reads.append


class _QuietValuesView(ValuesView[Any]):
    """`values()` of a managed MutableMapping: iterating reads without touching."""

    def __iter__(self) -> Iterator[Any]:
        mapping: Any = cast(Any, self)._mapping
        for key in mapping:
            yield mapping._memguard_raw_get(key)


class _QuietItemsView(ItemsView[Any, Any]):
    """`items()` of a managed MutableMapping: iterating reads without touching."""

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        mapping: Any = cast(Any, self)._mapping
        for key in mapping:
            yield key, mapping._memguard_raw_get(key)


def _managed_mapping_class(cls: Any, spec: _Spec) -> type:
    """A subclass of a MutableMapping class: the class's own methods do the storing."""
    base_init = cls.__init__
    base_getitem = cls.__getitem__
    base_setitem = cls.__setitem__
    base_delitem = cls.__delitem__
    own_contains = cls.__contains__ is not Mapping.__contains__
    base_contains = cls.__contains__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        handle = _new_handle(spec, _Backend(self, get=base_getitem, delete=base_delitem,
                                            keys=cls.__iter__))
        attach(self, handle)
        base_init(self, *args, **kwargs)
        handle.adopt_existing()
        handle.manager.register(handle, self)

    def __getitem__(self: Any, key: Key) -> Any:
        value = base_getitem(self, key)
        self._memguard.index.touch(key)
        return value

    def __setitem__(self: Any, key: Key, value: Any) -> None:
        handle: StoreHandle = self._memguard
        with handle.lock:
            base_setitem(self, key, value)
            victims = handle.stored_locked(key, value)
        if victims:
            handle.finish_evictions(victims)

    def __delitem__(self: Any, key: Key) -> None:
        handle: StoreHandle = self._memguard
        with handle.lock:
            base_delitem(self, key)
            handle.index.remove(key)

    def __contains__(self: Any, key: object) -> bool:
        if own_contains:
            return bool(base_contains(self, key))
        try:
            base_getitem(self, key)
        except KeyError:
            return False
        return True

    def clear(self: Any) -> None:
        handle: StoreHandle = self._memguard
        with handle.lock:
            for key in list(cls.__iter__(self)):
                base_delitem(self, key)
            handle.index.clear()

    namespace = {
        "__slots__": _slots_for(cls, "_memguard"),
        "__init__": __init__, "__getitem__": __getitem__, "__setitem__": __setitem__,
        "__delitem__": __delitem__, "__contains__": __contains__, "clear": clear,
        "_memguard_raw_get": base_getitem,
        "values": lambda self: _QuietValuesView(self),
        "items": lambda self: _QuietItemsView(self),
    }
    return _finish(cls, type(cls.__name__, (cls,), namespace))


#: The dict class that backs a `mapping=` attribute: indexes writes into its owner's handle.
ManagedDict = _managed_dict_class(dict, None)
ManagedDict.__qualname__ = ManagedDict.__name__ = "ManagedDict"
ManagedDict.__module__ = __name__


class _MappingAttribute:
    """Data descriptor for the `mapping=` attribute: whatever dict is assigned is adopted."""

    def __init__(self, attribute: str, spec: _Spec) -> None:
        self.attribute = attribute
        self.spec = spec

    def __get__(self, owner: Any, owner_type: Optional[type] = None) -> Any:
        if owner is None:
            return self
        try:
            return owner.__dict__[self.attribute]
        except KeyError:
            raise AttributeError(self.attribute) from None

    def __set__(self, owner: Any, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(
                f"{type(owner).__qualname__}.{self.attribute} holds the jobs of store "
                f"{self.spec.name!r} and must be a dict; got {type(value).__name__}")
        handle = _owner_handle(owner, self)
        jobs = ManagedDict()
        attach(jobs, handle)
        with handle.lock:
            dict.update(jobs, value)
            handle.index.clear()
            owner.__dict__[self.attribute] = jobs
            handle._backend = _Backend(jobs, get=_dict_get, delete=dict.__delitem__,
                                       keys=dict.keys)
            handle.index.job_of = handle._backend.get
        handle.adopt_existing()

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
    descriptor = _MappingAttribute(attribute, spec)
    base_init = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        base_init(self, *args, **kwargs)
        handle = _owner_handle(self, descriptor)
        handle.manager.register(handle, self)

    namespace = {attribute: descriptor, "__init__": __init__}
    return _finish(cls, type(cls.__name__, (cls,), namespace))


# -- finding a store's handle ----------------------------------------------------------------------

def handle(store: Any) -> StoreHandle:
    """The `StoreHandle` of a managed store instance (or of a registered plain dict)."""
    if isinstance(store, StoreHandle):
        return store
    found = getattr(store, "_memguard", None)
    if isinstance(found, StoreHandle):
        return found
    from memguard._manager import find_plain_handle

    plain = find_plain_handle(store)
    if plain is not None:
        return plain
    raise TypeError(
        f"{type(store).__qualname__} is not a managed store: decorate its class with "
        "@managed_store or register it with manager.setup_job_store_cleanup()")
