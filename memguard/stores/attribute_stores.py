"""`mapping=` stores: a class that holds its jobs in a dict attribute."""

from __future__ import annotations

import operator
import types
from collections.abc import Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    Optional,
)

from memguard.errors import StoreDefinitionError
from memguard.stores.backend import Backend, dict_get
from memguard.stores.building import _MISSING, _finish, _new_handle, _Spec, attach
from memguard.stores.dict_stores import _managed_dict_class
from memguard.stores.handle import LocalHandle

if TYPE_CHECKING:
    pass


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
            raise StoreDefinitionError(
                f"{type(owner).__qualname__}.{self.attribute} holds the jobs of store "
                f"{self.spec.name!r} (mapping={self.attribute!r}) and must be a dict; got "
                f"{type(value).__name__}; {_mapping_attributes(owner, self.attribute)}")
        handle = _owner_handle(owner, self)
        jobs = ManagedDict()
        attach(jobs, handle)
        with handle.lock:
            dict.update(jobs, value)
            old = owner.__dict__.get(self.holder)
            owner.__dict__[self.holder] = jobs
            handle.switch_backend(Backend(jobs, get=dict_get, delete=dict.__delitem__,
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


def _owner_handle(owner: Any, descriptor: _MappingAttribute) -> LocalHandle:
    handle: Optional[LocalHandle] = owner.__dict__.get("_memguard")
    if handle is None:
        handle = _new_handle(descriptor.spec, Backend(
            {}, get=dict_get, delete=dict.__delitem__, keys=dict.keys))
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
        if descriptor.holder not in self.__dict__:  # __init__ never set the job mapping
            raise StoreDefinitionError(
                f"@managed_store on {cls.__qualname__}: mapping={attribute!r} names no "
                f"attribute the instance has after __init__; "
                f"{_mapping_attributes(self, attribute)}")
        handle = _owner_handle(self, descriptor)
        handle.manager.register(handle, self)

    namespace = {attribute: descriptor, "__init__": __init__,
                 **_plain_readers(cls, attribute)}
    return _finish(cls, type(cls.__name__, (cls,), namespace), spec)


def _mapping_attributes(owner: Any, attribute: str) -> str:
    """What to write instead of `attribute`: the instance's attributes that hold a mapping
    (memguard's own excepted), with the closest one suggested."""
    names = sorted(name for name, value in vars(owner).items()
                   if isinstance(value, Mapping) and not name.startswith("_memguard"))
    if not names:
        return ("the instance has no attribute holding a mapping; mapping= names the dict "
                "attribute __init__ assigns (self.jobs = {} for mapping='jobs')")
    import difflib  # error paths only: not loaded by `import memguard`

    close = difflib.get_close_matches(attribute, names, n=1, cutoff=0.5)
    hint = f" (did you mean mapping={close[0]!r}?)" if close else ""
    return ("the attributes holding a mapping are: "
            f"{', '.join(repr(n) for n in names)}{hint}")


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
