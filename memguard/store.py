"""`@managed_store`: turn a job store class into one whose side index is always exact.

The decorator returns a subclass of the class it is given (same name, module and qualname),
whose write paths keep a `JobIndex` in step with the data and whose reads touch the job. Each
instance gets a `StoreHandle`, registered with its manager while the instance lives.
"""

from __future__ import annotations

import contextlib
import copyreg
import functools
import logging
import re
import sys
import threading
import weakref
from collections import Counter
from collections.abc import ItemsView, Iterator, Mapping, MutableMapping, ValuesView
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    NamedTuple,
    Optional,
    TypeVar,
    Union,
    cast,
    overload,
)

import attrs

from memguard import registry
from memguard._sizing import estimate_size
from memguard._units import show_value
from memguard.errors import StoreDefinitionError
from memguard.events import Cause, CleanupReport, EvictionEvent
from memguard.pipeline import apply_rule, run_pass
from memguard.policy import Policy, StorePolicy
from memguard.rules import Emergency, MaxBytes, MaxJobs, Pass, Pipeline, Rule, pipeline_for
from memguard.tracking import (
    NOTHING,
    RECHECK_MOST_PER_INSERT,
    RECHECK_PER_INSERT,
    RECHECK_PER_PASS,
    JobIndex,
    Key,
)

if TYPE_CHECKING:
    from memguard._manager import MemoryManager
    from memguard.registry import StoreHost

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


class _Victim(NamedTuple):
    """An evicted job between its removal (under the lock) and its release (outside)."""

    key: Key
    job: Any
    cause: Cause
    size: Optional[int]


class _Backend:
    """Raw access to a store's data, bypassing the managed methods (and so the index)."""

    needs_sync = False

    def __init__(self, store: Any, *, get: Callable[[Any, Key], Any],
                 delete: Callable[[Any, Key], None], keys: Callable[[Any], Any]) -> None:
        self._strong: Any = None
        try:
            self._ref: Callable[[], Any] = weakref.ref(store)
        except TypeError:  # plain dicts cannot be weakly referenced; they hold no handle either
            self._strong = store
            self._ref = self._held
        self._get, self._delete, self._keys = get, delete, keys

    def _held(self) -> Any:
        return self._strong

    def orphaned(self) -> bool:
        """True once nothing but this backend references the (plain dict) store: the app
        dropped it, so its manager may forget it. CPython reference counts; a weakly held
        store is never orphaned here (its finalizer unregisters it)."""
        return self._strong is not None and sys.getrefcount(self._strong) <= 2

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

    def count(self) -> int:
        """How many jobs the store holds (O(1) for a dict)."""
        store = self._ref()
        return 0 if store is None else len(store)


def _dict_get(store: Any, key: Key) -> Any:
    value = dict.get(store, key, _MISSING)  # dict.get never calls __missing__
    if value is _MISSING:
        raise KeyError(key)
    return value


class StoreHandle:
    """The control surface of one store instance: policy, touch, pins, stats, cleanup."""

    def __init__(self, name: str, *, manager: StoreHost, declared: Mapping[str, Any],
                 backend: _Backend) -> None:
        self.name = name
        self.manager = manager
        self._declared = dict(declared)
        self._backend = backend
        self.index = JobIndex(job_of=backend.get, active=lambda job: False, sizer=estimate_size)
        self.evictions: Counter[str] = Counter()
        self.policy = StorePolicy()
        self.pipeline = Pipeline()
        self.extra_rules: tuple[Rule, ...] = ()
        self.policy_source: Optional[Policy] = None
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
        on_insert: list[Rule] = []
        if "count" in policy.rules and store_policy.max_jobs is not None:
            on_insert.append(MaxJobs(store_policy.max_jobs))
        if "bytes" in policy.rules and store_policy.max_bytes is not None:
            on_insert.append(MaxBytes(store_policy.max_bytes))
        with self.lock:  # extra_rules is read here, under the lock add_rule takes too
            pipeline = pipeline_for(store_policy, policy.rules,
                                    emergency_order=policy.memory.emergency_order)
            pipeline = Pipeline(pipeline.rules[:-1] + self.extra_rules + pipeline.rules[-1:]
                                if pipeline.rules and isinstance(pipeline.rules[-1], Emergency)
                                else pipeline.rules + self.extra_rules)
            self.policy_source = policy
            self.policy = store_policy
            self.pipeline = pipeline
            self.index.active = store_policy.active
            self.index.sizer = store_policy.size or estimate_size
            self._insert_rules = Pipeline(tuple(on_insert)) if on_insert else None
            self._max_jobs = store_policy.max_jobs if "count" in policy.rules else None
            self._max_bytes = store_policy.max_bytes if "bytes" in policy.rules else None

    def declare(self, **rules: Any) -> None:
        """Add decorator-level rules (used by `setup_job_store_cleanup`) and re-apply.

        Validated first: on a bad value nothing changes (raises ValueError naming it).
        """
        declared = {**self._declared, **{k: v for k, v in rules.items() if v is not None}}
        policy = self.manager.policy
        effective = policy.store_policy(self.name, declared)
        self._declared = declared
        self.apply_policy(policy, effective)

    def add_rule(self, rule: Rule) -> None:
        """Run `rule` (a rule, a `|` composition or a plain callable) in every pass of this
        store, after the policy's rules and before the emergency rule; kept across reloads."""
        with self.lock:
            self.extra_rules += rule.rules if isinstance(rule, Pipeline) else (rule,)
            source = self.policy_source or self.manager.policy
            self.apply_policy(source, self.policy)

    # -- public operations ------------------------------------------------------------------

    def touch(self, key: Key) -> None:
        """Mark `key` as just used. O(1); an unknown key is ignored.

        In an adopted plain dict, a key not indexed yet means writes the index could not
        see: every such key is indexed first (O(n), in the dict's order), so the touched job
        goes after its untracked siblings, not ahead of them.
        """
        if key not in self.index:
            if not self._backend.needs_sync:
                return  # unknown to a managed store: nothing to touch
            self.reconcile()
        self.index.touch(key)

    def pin(self, key: Key) -> None:
        """Keep `key` from eviction until as many `unpin` calls; pins nest. A key not stored
        yet may be pinned (the job it will hold is then safe from its first write); only
        pins of stored jobs count in `stats().pinned`."""
        with self.lock:
            self.index.pin(key)

    def unpin(self, key: Key) -> None:
        with self.lock:
            self.index.unpin(key)

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
        return run_pass(self.pipeline, self, ctx)

    def stats(self) -> StoreStats:
        """Jobs, active jobs, pins, weighed bytes and evictions by cause, in O(1).

        `active` counts the jobs memguard saw active (or pinned) at its last look at each:
        at its write, in a scan, or in the round-robin re-checks of inserts and passes. A
        job whose status changed in place is counted by what it was until it is looked at
        again (pass granularity). A plain dict's keys are caught up with at each pass, so
        its `jobs` is the dict's own length and the rest is as of the last pass.
        """
        with self.lock:
            index = self.index
            jobs = self._backend.count() if self._backend.needs_sync else len(index)
            return StoreStats(
                name=self.name, jobs=jobs, active=len(index.known_active),
                pinned=index.pinned_jobs, bytes=index.total_bytes,
                unweighed=len(index.unweighed), evictions=dict(self.evictions),
            )

    def recency(self) -> list[Key]:
        """Job keys, least recently used first."""
        return self.index.recency()

    # -- internals: called by the store classes and the pipeline ------------------------------

    def switch_backend(self, backend: _Backend) -> None:
        """Read and delete through `backend` from now on (a reassigned `mapping=` dict)."""
        self._backend = backend
        self.index.job_of = backend.get

    def stored_locked(self, key: Key, job: Any) -> list[_Victim]:
        """Index a write and enforce the insert-time bounds; returns what they evicted.

        The job just written is never the victim: when every other job is active the store
        stays over its bound until one finishes, rather than drop what was just stored.
        """
        now = self.manager.clock()
        self.index.add(key, job, now)
        rules = self._insert_rules
        if rules is None or not self._over_bounds():
            return []
        victims: list[_Victim] = []
        ctx = Pass(now=now, order=self.policy.order)
        # finished jobs become victims again, in time
        self.index.recheck(RECHECK_PER_INSERT, most=RECHECK_MOST_PER_INSERT)
        self.index.writing = key  # counts as active while its own insert enforces the bound
        try:
            for rule in rules.rules:  # the one runner of passes, refusal guard included
                apply_rule(rule, self, ctx, victims)
        finally:
            self.index.writing = NOTHING
        return victims

    def follow_locked(self, cls: type, key: Key, value: Any) -> list[_Victim]:
        """After a write that the store class did not keep under `key` (it normalised the
        key, or refused the write): make the index match the store's keys, O(n). New keys
        are stored (bounds enforced), vanished ones forgotten, a job replaced under another
        key re-weighed. Warned about once per class."""
        if cls.__qualname__ not in _FOLLOWED:
            _FOLLOWED.add(cls.__qualname__)
            logger.warning(
                "memguard: %s.__setitem__ did not store job %r under that key (it changes "
                "keys or refuses writes); store %s follows what it really stored by comparing "
                "keys, O(jobs) per such write", cls.__qualname__, key, self.name)
        present = self._backend.list_keys()
        known = self.index.created
        still = set(present)
        for gone in [k for k in known if k not in still]:
            self.index.remove(gone)
        victims: list[_Victim] = []
        for stored in present:
            try:
                job = self._backend.get(stored)
            except KeyError:
                continue
            if stored not in known or job is value:
                victims += self.stored_locked(stored, job)
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
            events.append(EvictionEvent(self.name, victim.key, victim.cause, victim.size))
        if events:
            with self.lock:
                for event in events:
                    self.evictions[event.cause.value] += 1
            self.manager.notify_evictions(events)
        return events

    def absorb(self, before: Mapping[Key, Any], after: Mapping[Key, Any]) -> None:
        """Index what a write the store could not see did, going from `before` to `after`
        (shallow copies): new or replaced jobs are stored (bounds enforced, re-weighed),
        vanished ones removed. Evictions are finished outside the lock."""
        with self.lock:
            victims: list[_Victim] = []
            for key in [key for key in self.index.created if key not in after]:
                self.index.remove(key)
            for key, value in after.items():
                if key not in self.index or before.get(key, _MISSING) is not value:
                    victims += self.stored_locked(key, value)
        if victims:
            self.finish_evictions(victims)

    def prepare_pass(self, ctx: Optional[Pass] = None) -> None:
        """Before a pass (lock held): catch up with plain dicts, look again at the
        known-active jobs, round robin, until RECHECK_PER_PASS are found still running
        (finished ones, weighed once in their life, do not count; an emergency looks at
        all of them)."""
        if self._backend.needs_sync:
            self.reconcile()
        emergency = ctx is not None and ctx.budget is not None
        self.index.recheck(None if emergency else RECHECK_PER_PASS)

    def reconcile(self) -> None:
        """Make the index match the store's keys after writes it could not see: plain dicts,
        `dict.__init__`, a user's own `update`. O(n); new keys count as created now."""
        with self.lock:
            present = self._backend.list_keys()
            for key in set(self.index.created).difference(present):
                self.index.remove(key)
            for key in present:
                if key not in self.index:
                    self._adopt(key)

    def _adopt(self, key: Key) -> None:
        with self.lock:
            try:
                job = self._backend.get(key)
            except KeyError:  # gone again meanwhile (a plain dict written by another thread)
                return
            if key not in self.index:
                self.index.add(key, job, self.manager.clock())


#: Store classes already warned about writes that did not land under their key.
_FOLLOWED: set[str] = set()


def _release(job: Any, fields: tuple[str, ...], key: Key) -> None:
    """Set each release field to None (kept present) so its memory goes even if job is held."""
    for field in fields:
        try:
            if type(job) is dict or isinstance(job, MutableMapping):
                if field in job:
                    job[field] = None
            elif hasattr(job, field):
                setattr(job, field, None)
        except Exception:
            logger.warning("memguard: could not release %r of evicted job %r", field, key,
                           exc_info=True)


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
            return _with_mapping_attribute(cls, mapping, spec)  # type: ignore[return-value]
        if issubclass(cls, dict):
            return _managed_dict_class(cls, spec)  # type: ignore[return-value]
        if issubclass(cls, MutableMapping):
            return _managed_mapping_class(cls, spec)  # type: ignore[return-value]
        raise StoreDefinitionError(
            f"@managed_store on {cls.__qualname__}: it is neither a dict nor a MutableMapping "
            "subclass; name the dict attribute that holds its jobs with mapping='attr'")

    return decorate if maybe_cls is None else decorate(maybe_cls)


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


class _NoReads(dict):  # type: ignore[type-arg]
    """The read set of a dict no longer attached to a store: it keeps nothing."""

    __slots__ = ()

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


_NO_READS = _NoReads()


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
            handle.finish_evictions(victims)

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


def _dict_landed(store: Any, key: Key, value: Any) -> Any:
    return dict.get(store, key, _MISSING)


#: Write methods an undecorated subclass of a managed dict class may override.
_ABSORBED = ("update", "setdefault", "__ior__")


def _follow_subclass(subclass: Any) -> None:
    """`__init_subclass__` of managed dict classes: a subclass that is not decorated itself
    may still override write methods with ones that write through `dict` directly; wrap
    them so the index follows what they did."""
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


def _plain_copy(self: Any) -> tuple[Any, ...]:
    # A copy (copy, deepcopy, pickle) is a plain dict: it must not share the store's index.
    return (dict, (dict.copy(self),))


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
    base_init = cls.__init__
    base_getitem = cls.__getitem__
    base_setitem = cls.__setitem__
    base_delitem = cls.__delitem__
    base_pop = cls.pop
    base_popitem = cls.popitem
    base_clear = cls.clear
    user_get = None if cls.get is dict.get else cls.get
    dict_get = dict.get  # never calls __missing__, unlike dict.__getitem__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        store_spec = type(self)._memguard_spec  # None for a mapping= dict: its owner attaches
        if store_spec is not None:
            attach(self, _new_handle(store_spec, _Backend(
                self, get=_dict_get, delete=base_delitem, keys=dict.keys)))
        base_init(self, *args, **kwargs)
        if store_spec is not None:
            self._memguard.reconcile()  # dict.__init__ stores without __setitem__
            self._memguard.manager.register(self._memguard, self)

    # The read path: two C calls move `key` to the recent end of the read set (pop, then
    # insert), so the order of reads is exact; the lock is never taken (see JobIndex).
    def __getitem__(self: Any, key: Key) -> Any:
        value = base_getitem(self, key)
        reads = self._memguard_reads
        reads.pop(key, None)
        reads[key] = None
        return value

    def get(self: Any, key: Key, default: Any = None) -> Any:
        if user_get is not None:
            value = user_get(self, key, default)
            if dict.__contains__(self, key):
                reads = self._memguard_reads
                reads.pop(key, None)
                reads[key] = None
            return value
        value = dict_get(self, key, _MISSING)
        if value is _MISSING:
            return default
        reads = self._memguard_reads
        reads.pop(key, None)
        reads[key] = None
        return value

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
            handle.finish_evictions(victims)
        return default

    def update(self: Any, *args: Any, **kwargs: Any) -> None:
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

    def __ior__(self: Any, other: Any) -> Any:
        self.update(other)
        return self

    def clear(self: Any) -> None:
        handle: Optional[StoreHandle] = self._memguard
        if handle is None:
            base_clear(self)
            return
        with handle.lock:
            base_clear(self)
            if self._memguard is handle:
                handle.index.clear()

    namespace: dict[str, Any] = {
        "__slots__": _slots_for(cls, "_memguard", "_memguard_reads"),
        "__init__": __init__, "__getitem__": __getitem__, "get": get, "pop": pop,
        "popitem": popitem, "setdefault": setdefault, "update": update, "__ior__": __ior__,
        "clear": clear, "__reduce__": _plain_copy,
        **_indexed_writes(base_setitem, base_delitem,
                          _dict_landed if "__setitem__" in below else None),
        **overrides,
    }
    managed: Any = _finish(cls, type(cls.__name__, (cls,), namespace), spec)

    def __init_subclass__(subclass: Any, /, **kwargs: Any) -> None:
        super(managed, subclass).__init_subclass__(**kwargs)
        _follow_subclass(subclass)

    type.__setattr__(managed, "__init_subclass__", classmethod(__init_subclass__))
    return cast(type, managed)


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


def _managed_mapping_class(cls: Any, spec: _Spec) -> type:
    """A subclass of a MutableMapping class: the class's own methods do the storing."""
    if getattr(cls, "_memguard_spec", None) is not None:  # managed already: a new spec only
        return _finish(cls, type(cls.__name__, (cls,), {"__slots__": ()}), spec)
    base_init = cls.__init__
    base_getitem = cls.__getitem__
    base_delitem = cls.__delitem__
    own_contains = cls.__contains__ is not Mapping.__contains__
    base_contains = cls.__contains__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        store_handle = _new_handle(type(self)._memguard_spec, _Backend(
            self, get=base_getitem, delete=base_delitem, keys=cls.__iter__))
        attach(self, store_handle)
        base_init(self, *args, **kwargs)
        store_handle.reconcile()
        store_handle.manager.register(store_handle, self)

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

    def clear(self: Any) -> None:
        handle: StoreHandle = self._memguard
        with handle.lock:
            for key in list(cls.__iter__(self)):
                base_delitem(self, key)
            handle.index.clear()

    def landed(self: Any, key: Key, value: Any) -> Any:
        return value if __contains__(self, key) else _MISSING

    base_pop = cls.pop
    base_popitem = cls.popitem

    def pop(self: Any, key: Key, *default: Any) -> Any:
        # MutableMapping.pop reads, then deletes: an eviction in between would raise KeyError
        with self._memguard.lock:
            return base_pop(self, key, *default)

    def popitem(self: Any) -> tuple[Key, Any]:
        with self._memguard.lock:
            return base_popitem(self)  # type: ignore[no-any-return]

    base_copy = getattr(cls, "__copy__", None)

    def __copy__(self: Any) -> Any:
        """A copy is a store of its own (`UserDict.copy()` and `copy.copy` come here): the
        class's own copy, or a shallow one, then a new handle indexing what it holds."""
        if base_copy is not None:
            new = base_copy(self)
        else:
            kind: Any = type(self)
            new = kind.__new__(kind)
            if hasattr(self, "__dict__"):
                new.__dict__.update(self.__dict__)
            for slot in copyreg._slotnames(type(self)):  # type: ignore[attr-defined]
                if slot not in ("_memguard", "__weakref__") and hasattr(self, slot):
                    setattr(new, slot, getattr(self, slot))
        store_handle = _new_handle(type(new)._memguard_spec, _Backend(
            new, get=base_getitem, delete=base_delitem, keys=cls.__iter__))
        attach(new, store_handle)
        store_handle.reconcile()
        store_handle.manager.register(store_handle, new)
        return new

    namespace = {
        "__slots__": _slots_for(cls, "_memguard"),
        "__init__": __init__, "__getitem__": __getitem__, "__contains__": __contains__,
        "clear": clear, "_memguard_raw_get": base_getitem,
        "values": lambda self: _QuietValuesView(self),
        "items": lambda self: _QuietItemsView(self),
        "__copy__": __copy__, "pop": pop, "popitem": popitem,
        **_indexed_writes(cls.__setitem__, base_delitem, landed),
    }
    return _finish(cls, type(cls.__name__, (cls,), namespace), spec)


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
            old = owner.__dict__.get(self.attribute)
            owner.__dict__[self.attribute] = jobs
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

    namespace = {attribute: descriptor, "__init__": __init__}
    return _finish(cls, type(cls.__name__, (cls,), namespace), spec)


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
