"""`@touches`: accessors that mark the job they read as just used.

A Python function (method, classmethod, staticmethod, sync or async) is wrapped by a function
generated with its own parameters, which touches after the call (`_generated`). Anything else
(a callable object, a job id taken through `**kwargs`) goes through wrapt, whose wrapper sees
`(wrapped, instance, args, kwargs)` with `self`/`cls` already split off into `instance`;
wrapt is imported only then.
"""

from __future__ import annotations

import functools
import inspect
import keyword
import textwrap
import types
import weakref
from collections.abc import Mapping
from typing import Any, Callable, NoReturn, Optional, TypeVar, Union, overload

from memguard.errors import StoreDefinitionError
from memguard.stores import registry
from memguard.stores.building import handle
from memguard.stores.protocol import StoreHandle, as_handle

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
    fast = _generated(wrapped, key, store is None, find_store)
    if fast is not None:
        return fast  # type: ignore[no-any-return]

    # Imported here, at the first accessor the generated function cannot serve: importing
    # wrapt loads asyncio, ssl, socket, email and zipfile (about 10 MB), which an app that
    # never needs it should not carry (`import memguard` stays light).
    import wrapt

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


def _generated(wrapped: Any, key: KeySpec, on_instance: bool,
               find_store: Callable[[Any], Any]) -> Any:
    """`wrapped` touching after each call, as a function generated with its own parameters
    (compiled once, here, as attrs compiles `__init__`); None when wrapt must serve it.

    wrapt builds a bound wrapper object on every attribute access of a method (about 450 ns
    here), and a `(*args, **kwargs)` wrapper packs and unpacks the arguments at every call
    (about 200 ns). The generated function binds as the original does, passes every argument
    straight through and finds the job id in a local variable. A method whose store is its
    instance (`on_instance`: no `store=`) has the touch inlined (`_TOUCH_SELF`); others find
    their stores as wrapt's wrapper did (`find_store`), at each call, since stores come and go.
    """
    binder = type(wrapped) if isinstance(wrapped, (classmethod, staticmethod)) else None
    function = wrapped.__func__ if binder is not None else wrapped
    if not isinstance(function, types.FunctionType):
        return None
    # The parameters the function itself takes: not those of a function it wraps (a
    # decorator's (*args, **kwargs) wrapper goes through wrapt, as before).
    signature = inspect.signature(function, follow_wrapped=False)
    names = list(signature.parameters)
    if "__signature__" in vars(function) or any(n.startswith("__memguard") for n in names):
        return None  # a signature that is not the code's, or names that could clash
    bound = binder is classmethod or (binder is None and names[:1] in (["self"], ["cls"]))
    if on_instance and binder is None and not bound:
        return None  # a method whose instance is not named self/cls: wrapt finds it
    owner = names[0] if bound else "None"
    arguments = [parameter.name for parameter in signature.parameters.values() if parameter.kind
                 not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)][1 if bound else 0:]
    inline = on_instance and binder is None and owner == "self"
    namespace: dict[str, Any] = {
        "__memguard_function": function, "__memguard_absent": _NO_KEY,
        "__memguard_not_a_store": _not_a_store(function),
        "__memguard_stores": find_store, "__memguard_touch": _touch, "__memguard_key": key}
    name = key if isinstance(key, str) else next(iter(arguments), None)
    if callable(key):
        inline = False
        touch = ("__memguard_touch(__memguard_stores({owner}), __memguard_absent "
                 "if __memguard_result is None else __memguard_key(__memguard_result))\n")
    elif name is None or name not in arguments:
        return None  # taken through **kwargs, or no argument to take it from
    else:
        touch = _TOUCH_SELF if inline else "__memguard_touch(__memguard_stores({owner}), {key})\n"
        if signature.parameters[name].default is not inspect.Parameter.empty:
            # Given or not? The value cannot tell (a caller may pass the default itself),
            # so wrapt, which sees the call's own arguments, serves such keys.
            return None
    header, call = _forwarding(signature, namespace)
    asynchronous = inspect.iscoroutinefunction(function)
    touch = touch.replace("{owner}", owner).replace("{key}", str(name))
    source = (f"{'async ' if asynchronous else ''}def accessor({header}):\n"
              f"    __memguard_result = {'await ' if asynchronous else ''}"
              f"__memguard_function({call})\n"
              f"{textwrap.indent(touch, '    ')}"
              "    return __memguard_result\n")
    exec(compile(source, f"<@touches {_name(function)}>", "exec"), namespace)
    accessor: Any = functools.wraps(function)(namespace["accessor"])
    if inline and name is not None:
        # Asked of the accessor itself only: an outer decorator's functools.wraps copies
        # this attribute onto its own wrapper, which must keep its place.
        accessor.__memguard_plain_read__ = functools.partial(
            _plain_read, weakref.ref(accessor), function, name)
    return accessor if binder is None else binder(accessor)


#: The touch of a method whose store is its instance: `JobIndex.touch` inlined, with the
#: cheaper test first: a key already in the read set (read since the last drain, as by the
#: accessor's own `self.jobs.get`) is known, so only a key absent from it is looked up in
#: `created` (unknown keys never enter the read set). No lock: `pop` and the insert are each
#: one dict operation, atomic under the GIL, as on the store's own read path.
_TOUCH_SELF = """\
try:
    __memguard_index = self._memguard.index
except AttributeError:
    __memguard_not_a_store(self)
__memguard_reads = __memguard_index.reads
if (__memguard_reads.pop({key}, __memguard_absent) is not __memguard_absent
        or {key} in __memguard_index.created):
    __memguard_reads[{key}] = None
"""


def _plain_read(accessor: weakref.ref[Any], function: types.FunctionType, key: str,
                candidate: Any, attribute: str) -> bool:
    """Whether `candidate` is the `accessor` generated for `function` and the whole body of
    `function` is `return self.<attribute>.get(<key>)` or `return self.<attribute>[<key>]`.

    Asked by `@managed_store(mapping=attribute)`: such a read touches the job itself, when it
    finds it, exactly as the accessor's touch would, so the store keeps the undecorated
    function (one touch per call, no wrapper). The test compares bytecode with the same
    one-line body compiled here with the same parameters, so it holds on every Python
    version; a docstring, annotations or another body make no difference or no match.
    """
    if candidate is not accessor():
        return False  # another decorator's wrapper, which copied the attribute
    code = function.__code__
    signature = inspect.signature(function, follow_wrapped=False)
    if code.co_freevars or code.co_cellvars or keyword.iskeyword(attribute):
        return False  # (a key with a default never gets here: wrapt serves it)
    asynchronous = "async " if inspect.iscoroutinefunction(function) else ""
    for body in (f"self.{attribute}.get({key})", f"self.{attribute}[{key}]"):
        namespace: dict[str, Any] = {}
        header, _ = _forwarding(signature, namespace)
        exec(f"{asynchronous}def plain({header}):\n    return {body}\n", namespace)
        plain = namespace["plain"].__code__
        if (plain.co_code, plain.co_names, plain.co_varnames, plain.co_argcount,
                plain.co_posonlyargcount, plain.co_kwonlyargcount) == (
                code.co_code, code.co_names, code.co_varnames, code.co_argcount,
                code.co_posonlyargcount, code.co_kwonlyargcount):
            return True
    return False


def _forwarding(signature: inspect.Signature, defaults: dict[str, Any]) -> tuple[str, str]:
    """The parameter list of a function with `signature` (each default bound to a name put
    in `defaults`) and the arguments that pass every parameter on, as source text."""
    header: list[str] = []
    call: list[str] = []
    parameters = list(signature.parameters.values())
    star_written = False
    for position, parameter in enumerate(parameters):
        kind, name = parameter.kind, parameter.name
        if kind is parameter.KEYWORD_ONLY and not star_written:
            header.append("*")
        star_written |= kind in (parameter.KEYWORD_ONLY, parameter.VAR_POSITIONAL)
        text = ("*" if kind is parameter.VAR_POSITIONAL
                else "**" if kind is parameter.VAR_KEYWORD else "") + name
        call.append(f"{name}={name}" if kind is parameter.KEYWORD_ONLY else text)
        if parameter.default is not parameter.empty:
            defaults[f"__memguard_default_{position}"] = parameter.default
            text += f"=__memguard_default_{position}"
        header.append(text)
        following = parameters[position + 1].kind if position + 1 < len(parameters) else None
        if kind is parameter.POSITIONAL_ONLY and following is not parameter.POSITIONAL_ONLY:
            header.append("/")
    return ", ".join(header), ", ".join(call)


def _not_a_store(function: Any) -> Callable[[Any], NoReturn]:
    def fail(instance: Any) -> NoReturn:
        raise StoreDefinitionError(
            f"@touches on {_name(function)}: called on {instance!r}, which is not a managed "
            "store; pass store= to name the store it reads") from None
    return fail


def _touch(stores: Any, key: Any) -> None:
    if key is _NO_KEY:
        return
    if StoreHandle in type(stores).__mro__:  # `as_handle`'s test, inlined: a call's cost
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
    return [found for host in registry.hosts() for one in host.stores.get(name, ())
            if (found := as_handle(one)) is not None]


def _store_finder(wrapped: Any, store: Any) -> Callable[[Any], Any]:
    """How to find the store(s) to touch for a call made on `instance`."""
    if store is None:
        def from_instance(instance: Any) -> Any:
            found = as_handle(getattr(instance, "_memguard", None))
            if found is not None:
                return found
            raise StoreDefinitionError(
                f"@touches on {_name(wrapped)}: called on {instance!r}, which is not a managed "
                "store; pass store= to name the store it reads")
        return from_instance

    # what `store=` is does not change: decided here, not at each call
    if as_handle(store) is not None:
        return lambda instance: store
    if isinstance(store, str):
        return lambda instance: _handles_named(store)
    if callable(store) and not isinstance(store, Mapping):
        def called(instance: Any) -> Any:
            target = store()
            return _handles_named(target) if isinstance(target, str) else handle(target)
        return called
    return lambda instance: handle(store)  # found again at each call: it may be forgotten
