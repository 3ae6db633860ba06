"""`@touches`: accessors that mark the job they read as just used.

Built on wrapt so that one decorator serves functions, methods, classmethods and
staticmethods alike: the wrapper sees `(wrapped, instance, args, kwargs)` with `self`/`cls`
already split off into `instance`, so "the first argument after self" is simply `args[0]`.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Mapping
from typing import Any, Callable, Optional, TypeVar, Union, overload

import wrapt

from memguard import registry
from memguard.errors import StoreDefinitionError
from memguard.handles import StoreHandle
from memguard.store import handle

F = TypeVar("F", bound=Callable[..., Any])
KeySpec = Union[str, Callable[[Any], Any], None]
_NO_KEY: Any = object()


@overload
def touches(wrapped: F, *, key: KeySpec = None, store: Any = None) -> F: ...
@overload
def touches(wrapped: None = None, *, key: KeySpec = None,
            store: Any = None) -> Callable[[F], F]: ...
def touches(wrapped: Optional[F] = None, *, key: KeySpec = None,
            store: Any = None) -> Union[F, Callable[[F], F]]:
    """Touch the job an accessor returns, after it returns.

    The job id is the first argument after `self`/`cls` (default), the argument named by
    `key="job_id"`, or `key(result)` when `key` is a callable. A method finds its store
    through its instance; anything else names it with `store=` (a store, a `StoreHandle`,
    a store name, or a zero-argument callable returning one of those).
    """
    if wrapped is None:
        return functools.partial(touches, key=key, store=store)
    if key is not None and not isinstance(key, str) and not callable(key):
        raise StoreDefinitionError(
            f"@touches on {_name(wrapped)}: key must be an argument name or a callable taking "
            f"the result; got {key!r}")
    find_key = _key_finder(wrapped, key)
    find_store = _store_finder(wrapped, store)
    fast = _plain_method_accessor(wrapped, key, store)
    if fast is not None:
        return fast

    if inspect.iscoroutinefunction(_function(wrapped)):
        @wrapt.decorator
        async def touch_after_await(wrapped: Any, instance: Any, args: tuple[Any, ...],
                                    kwargs: dict[str, Any]) -> Any:
            result = await wrapped(*args, **kwargs)
            _touch(find_store(instance), find_key(args, kwargs, result))
            return result

        return touch_after_await(wrapped)

    @wrapt.decorator
    def touch_after(wrapped: Any, instance: Any, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        result = wrapped(*args, **kwargs)
        _touch(find_store(instance), find_key(args, kwargs, result))
        return result

    return touch_after(wrapped)


def _plain_method_accessor(wrapped: Any, key: KeySpec, store: Any) -> Optional[Callable[..., Any]]:
    """The common case, `def get_job(self, job_id)`, as a plain function.

    wrapt builds a bound wrapper object on every attribute access of a method, which alone
    costs about 450 ns here, more than the whole budget of a touch. A plain function binds
    for free and behaves the same for a sync instance method whose store is its instance.
    """
    function = wrapped
    if (store is not None or callable(key) or not isinstance(function, types.FunctionType)
            or inspect.iscoroutinefunction(function)):
        return None
    names = list(inspect.signature(function).parameters)
    if names[:1] != ["self"]:
        return None
    parameters = _parameters(function)
    name = key if isinstance(key, str) else (parameters[0] if parameters else None)
    if name is None or name not in parameters or _is_keyword_only(function, name):
        return None  # keyword-only or taken through **kwargs: the general path handles it
    position = parameters.index(name)

    @functools.wraps(function)
    def touching(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = function(self, *args, **kwargs)
        if position < len(args):
            job_id = args[position]
        elif name in kwargs:
            job_id = kwargs[name]
        else:
            return result
        found = getattr(self, "_memguard", None)
        if found is None:
            raise StoreDefinitionError(
                f"@touches on {_name(function)}: called on {self!r}, which is not a managed "
                "store; pass store= to name the store it reads")
        index = found.index  # JobIndex.touch, inlined: this is the hot path
        if job_id in index.created:
            reads = index.reads
            reads.pop(job_id, None)
            reads[job_id] = None
        return result

    return touching


def _touch(stores: Any, key: Any) -> None:
    if key is _NO_KEY:
        return
    if isinstance(stores, StoreHandle):
        stores.index.touch(key)
    else:
        for one in stores:
            one.index.touch(key)


def _function(wrapped: Any) -> Callable[..., Any]:
    function: Callable[..., Any] = getattr(wrapped, "__func__", wrapped)  # class/staticmethod
    return function


def _name(wrapped: Any) -> str:
    function = _function(wrapped)
    return getattr(function, "__qualname__", repr(function))


KeyFinder = Callable[[tuple[Any, ...], dict[str, Any], Any], Any]


def _key_finder(wrapped: Any, key: KeySpec) -> KeyFinder:
    """How to find the job id from a call's arguments (self/cls excluded) and its result."""
    if callable(key):
        def from_result(args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> Any:
            return _NO_KEY if result is None else key(result)
        return from_result

    parameters = _parameters(wrapped)
    name = key if isinstance(key, str) else (parameters[0] if parameters else None)
    if isinstance(key, str) and key not in parameters and not _takes_var_keywords(wrapped):
        raise StoreDefinitionError(
            f"@touches on {_name(wrapped)}: key={key!r} names no parameter; it has "
            f"{', '.join(parameters) or 'none'}")
    position = parameters.index(name) if name in parameters and not _is_keyword_only(
        wrapped, name) else None

    def from_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> Any:
        if name is not None and name in kwargs:
            return kwargs[name]
        if position is not None and position < len(args):
            return args[position]
        return _NO_KEY

    return from_arguments


def _signature(wrapped: Any) -> inspect.Signature:
    return inspect.signature(_function(wrapped))


def _parameters(wrapped: Any) -> list[str]:
    """Parameter names after self/cls, as the wrapper's `args` will see them."""
    names = [p.name for p in _signature(wrapped).parameters.values()
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    bound = isinstance(wrapped, classmethod) or (
        not isinstance(wrapped, staticmethod) and names[:1] in (["self"], ["cls"]))
    return names[1:] if bound else names


def _takes_var_keywords(wrapped: Any) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in _signature(wrapped).parameters.values())


def _is_keyword_only(wrapped: Any, name: str) -> bool:
    parameter = _signature(wrapped).parameters.get(name)
    return parameter is not None and parameter.kind is parameter.KEYWORD_ONLY


def _handles_named(name: str) -> list[StoreHandle]:
    """The live stores called `name`, in every manager (usually one store)."""
    return [found for host in registry.hosts() for found in host.stores.get(name, ())
            if isinstance(found, StoreHandle)]


def _store_finder(wrapped: Any, store: Any) -> Callable[[Any], Any]:
    """How to find the store(s) to touch for a call made on `instance`."""
    if store is None:
        def from_instance(instance: Any) -> Any:
            found = getattr(instance, "_memguard", None)
            if isinstance(found, StoreHandle):
                return found
            raise StoreDefinitionError(
                f"@touches on {_name(wrapped)}: called on {instance!r}, which is not a managed "
                "store; pass store= to name the store it reads")
        return from_instance

    def named(instance: Any) -> Any:
        target = store() if callable(store) and not isinstance(
            store, (Mapping, StoreHandle)) else store
        if isinstance(target, str):
            return _handles_named(target)
        return handle(target)

    return named


__all__ = ["touches"]
