"""`@managed_store`: turn a job store class into one whose side index is always exact.

The decorator returns a subclass of the class it is given (same name, module and qualname),
whose write paths keep a `JobIndex` in step with the data and whose reads touch the job. Each
instance gets a `StoreHandle`, registered with its manager while the instance lives.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Optional,
    Union,
    overload,
)

from memguard.errors import StoreDefinitionError
from memguard.policy.options import StorePolicy
from memguard.policy.units import show_value
from memguard.stores.attribute_stores import _with_mapping_attribute
from memguard.stores.building import C, _Spec
from memguard.stores.dict_stores import _managed_dict_class
from memguard.stores.mapping_stores import _managed_mapping_class

if TYPE_CHECKING:
    from memguard.stores.registry import StoreHost


# -- the decorator ------------------------------------------------------------------------------

_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """`DiagramJobs` -> `diagram_jobs`, `IaCJobStore` -> `ia_c_job_store`."""
    return _SNAKE.sub("_", name).lower()


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
    max_running: Union[float, str, None] = None,
    active: Optional[Callable[[Any], bool]] = None,
    release: tuple[str, ...] = ("result",),
    size: Optional[Callable[[Any], int]] = None,
    order: str = "lru",
    bounds: Optional[str] = None,
    max_age_hard: Union[float, str, None] = None,
    manager: Optional[StoreHost] = None,
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
    max_running: Union[float, str, None] = None,
    active: Optional[Callable[[Any], bool]] = None,
    release: tuple[str, ...] = ("result",),
    size: Optional[Callable[[Any], int]] = None,
    order: str = "lru",
    bounds: Optional[str] = None,
    max_age_hard: Union[float, str, None] = None,
    manager: Optional[StoreHost] = None,
) -> Union[C, Callable[[C], C]]:
    """Manage the jobs of a store class: bounded by the given rules and the policy.

    Works on dict subclasses, `MutableMapping` subclasses, and (with `mapping="attr"`) classes
    that keep their jobs in a dict attribute. Raises `StoreDefinitionError` at decoration time
    on a class it cannot manage or on contradictory options.
    """
    given = {"max_age": max_age, "max_idle": max_idle, "max_jobs": max_jobs,
             "max_bytes": max_bytes, "max_running": max_running, "active": active,
             "size": size, "bounds": bounds, "max_age_hard": max_age_hard}
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
              declared: dict[str, Any], manager: Optional[StoreHost]) -> type:
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
