"""`MemorySample`: one reading of memory, as every probe returns it."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Protocol, Union

import attrs

from memguard.policy.options import SCOPES

PathLike = Union[str, "os.PathLike[str]"]







def _size(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative int of bytes, not {value!r}")


def _optional_size(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _size(instance, attribute, value)


def _optional_limit(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (type(value) is not int or value <= 0):
        raise ValueError(f"limit must be a positive int of bytes or None, not {value!r}")


def _scope(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in SCOPES[:2]:
        raise ValueError(f"scope must be one of {SCOPES[:2]}, not {value!r}")


@attrs.frozen(slots=True)
class MemorySample:
    """One reading of memory, in bytes.

    `usage` is the figure thresholds compare against: RSS + swap for the process scope, the
    cgroup's usage (see `CgroupProbe`) for the cgroup scope. `rss` is always this process's
    resident set, so `heap` / `rss` stays meaningful in either scope. `heap` is `heap_bytes()`
    (None where unavailable), `limit` the memory limit when known.
    """

    usage: int = attrs.field(validator=_size)
    rss: int = attrs.field(validator=_size)
    swap: int = attrs.field(validator=_size)
    heap: Optional[int] = attrs.field(validator=_optional_size)
    limit: Optional[int] = attrs.field(validator=_optional_limit)
    scope: str = attrs.field(validator=_scope)

    @property
    def utilization(self) -> Optional[float]:
        """`usage` / `limit` (1.0 = at the limit; may exceed 1 with swap), None without a limit."""
        return None if self.limit is None else self.usage / self.limit

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: the fields (sizes in bytes) plus `utilization`."""
        return {
            "usage": self.usage,
            "rss": self.rss,
            "swap": self.swap,
            "heap": self.heap,
            "limit": self.limit,
            "scope": self.scope,
            "utilization": self.utilization,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemorySample:
        """Rebuild a sample from `to_dict()` output (for example a `/memory` payload).

        Derived keys (`utilization`) and unknown keys are ignored.
        """
        return cls(
            usage=data["usage"],
            rss=data["rss"],
            swap=data.get("swap", 0),
            heap=data.get("heap"),
            limit=data.get("limit"),
            scope=data["scope"],
        )


class Probe(Protocol):
    """Anything that returns a fresh `MemorySample` when called: a probe class or a function."""

    def __call__(self) -> MemorySample: ...
