"""Policies: what each store keeps and when the monitor steps in.

`StorePolicy` is the effective configuration of one store; `MemoryPolicy` the monitor's
thresholds; `Policy` the whole file, which knows how to compute each store's effective
`StorePolicy` from built-in defaults, `[defaults]`, decorator arguments, `[stores.NAME]` and
the environment (lowest precedence first), and where each effective value came from.

Policies are read from TOML (`load_policy`, `Policy.from_toml`) and validated whole before
anything uses them: a file is applied entirely or not at all, and every mistake is one
`PolicyError` naming the file, the line, the dotted key, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import stat
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Callable, Optional, Union

import attrs

from memguard._units import (
    MAX_COUNT,
    MAX_DURATION,
    SIZE_HELP,
    Percent,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
    positive_count,
    positive_duration,
    positive_size,
    show_value,
)
from memguard.errors import PolicyError
from memguard.memory import SCOPES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9 and 3.10 only
    import tomli as tomllib

__all__ = [
    "DEFAULT_ACTIVE_STATUSES",
    "ENV_CHECK_INTERVAL",
    "ENV_JOB_RETENTION_MINUTES",
    "ENV_MAX_JOBS_PER_STORE",
    "ENV_MEMORY_LIMIT",
    "ENV_POLICY",
    "ENV_TOKEN",
    "MEMORY_FIELDS",
    "ORDERS",
    "RULE_NAMES",
    "SCOPES",
    "STORE_FIELDS",
    "THRESHOLD_FIELDS",
    "ActiveWhen",
    "MemoryPolicy",
    "Policy",
    "StorePolicy",
    "Threshold",
    "Thresholds",
    "bundled_policy",
    "bundled_policy_names",
    "load_policy",
    "policy_from_environment",
]

#: Statuses that mark a job as still being worked on (never evicted).
DEFAULT_ACTIVE_STATUSES = frozenset({"pending", "queued", "running", "processing", "in_progress"})
#: Eviction orders a store (or the emergency rule) may use.
ORDERS = ("lru", "oldest", "largest", "delivered")
#: Rule names `[pipeline] rules` may list, in the order a pass runs them.
RULE_NAMES = ("age", "idle", "count", "bytes", "emergency")

#: Environment variables, read when a policy is loaded (they take precedence over files).
ENV_POLICY = "MEMGUARD_POLICY"
ENV_MEMORY_LIMIT = "MEMGUARD_MEMORY_LIMIT"
ENV_CHECK_INTERVAL = "MEMGUARD_CHECK_INTERVAL"
ENV_JOB_RETENTION_MINUTES = "JOB_RETENTION_MINUTES"
ENV_MAX_JOBS_PER_STORE = "MAX_JOBS_PER_STORE"
#: The bearer token that `POST /memory/cleanup` and `memguard cleanup --url` use (read by the
#: web surfaces and the CLI, not by policies: its one home is here beside the others).
ENV_TOKEN = "MEMGUARD_TOKEN"
#: Every environment variable a policy reads.
ENVIRONMENT_KNOBS = (ENV_POLICY, ENV_MEMORY_LIMIT, ENV_CHECK_INTERVAL, ENV_JOB_RETENTION_MINUTES,
                     ENV_MAX_JOBS_PER_STORE)

#: Provenance of a value nobody set.
BUILT_IN = "built-in"
#: Provenance of a decorator argument.
DECORATOR = "decorator"
#: `source` of errors an environment variable causes.
ENVIRONMENT = "environment"

#: A threshold is a size in bytes or a percentage of the memory limit.
Threshold = Union[int, Percent]

#: A percentage threshold may be at most this share of the limit (a guard against typos).
_MAX_FRACTION = 10.0


# --------------------------------------------------------------------------------------------
# Value readers. Each takes what a user wrote (a TOML value, a decorator argument) and returns
# the canonical value, or raises ValueError("expected ...; got ..."); callers add the where.
# --------------------------------------------------------------------------------------------


def _suggest(word: str, options: Iterable[str]) -> str:
    """`' did you mean "x"?'` when `word` is close to one of `options`, else `''`."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f' did you mean "{close[0]}"?' if close else ""


def _any_duration(value: object) -> float:
    """A duration of zero or more, in seconds (zero turns a wait off)."""
    return parse_duration(value)


def _threshold(value: object) -> Threshold:
    """A memory threshold: a size above zero or a percentage of the limit (0% < p <= 1000%)."""
    parsed = value if isinstance(value, Percent) else parse_size(value, allow_percent=True)
    allowed = f'{SIZE_HELP} or a percentage of the limit such as "80%"'
    if isinstance(parsed, Percent):
        if not 0 < parsed.fraction <= _MAX_FRACTION:
            raise ValueError(
                f"{allowed}; got {show_value(value)} (a percentage must be above 0% and at "
                f"most {_MAX_FRACTION * 100:g}%)"
            )
        return parsed
    if parsed <= 0:
        raise ValueError(f"{allowed}; got {show_value(value)} (must be more than zero)")
    return parsed


def _limit(value: object) -> Union[int, str, None]:
    """The memory limit: `"auto"` (the cgroup limit, else physical RAM) or a size above zero."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return positive_size(value)
    except ValueError as error:
        raise ValueError(f'{error}; or "auto" (the container limit, else physical RAM)') from None


def _choice(value: object, options: tuple[str, ...], what: str) -> str:
    """One of `options`, with a "did you mean" when the value is close to one."""
    if isinstance(value, str) and value in options:
        return value
    allowed = ", ".join(f'"{option}"' for option in options)
    hint = _suggest(value, options) if isinstance(value, str) else ""
    suffix = f";{hint}" if hint else ""
    raise ValueError(f"expected {what}: one of {allowed}; got {show_value(value)}{suffix}")


def _order(value: object) -> str:
    """An eviction order."""
    return _choice(value, ORDERS, "an eviction order")


def _scope(value: object) -> str:
    """Where memory is measured."""
    return _choice(value, SCOPES, "a memory scope")


def _boolean(value: object) -> bool:
    """A real boolean (not a string or a number that looks like one)."""
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false; got {show_value(value)}")
    return value


def _strings(value: object, what: str, example: str) -> tuple[str, ...]:
    """A list of non-empty strings; a lone string counts as a list of one."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ValueError(f"expected a list of {what} such as {example}; got {show_value(value)}")
    strings: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise ValueError(
                f"expected a list of {what} (non-empty strings) such as {example}; got "
                f"{show_value(item)} in {show_value(value)}"
            )
        strings.append(item)
    return tuple(strings)


def _release(value: object) -> tuple[str, ...]:
    """The fields of a job set to None when it is evicted."""
    return _strings(value, "field names", '["result"]')


_ACTIVE_EXAMPLE = 'a table { field = "status", in = ["pending", "running"] }'


def _active(value: object) -> Callable[[Any], bool]:
    """The active-job predicate: a callable, or the table `{ field = "status", in = [...] }`."""
    if value is None:
        return ActiveWhen()
    if isinstance(value, Mapping):
        for key in value:
            if key not in ("field", "in"):
                hint = _suggest(str(key), ("field", "in"))
                raise ValueError(
                    f"expected {_ACTIVE_EXAMPLE}; got the unknown key {show_value(key)}"
                    + (f";{hint}" if hint else "")
                )
        field = value.get("field", "status")
        if not isinstance(field, str) or not field:
            raise ValueError(
                f'expected field = a field name such as "status"; got {show_value(field)}'
            )
        statuses = _strings(value.get("in", ()), "statuses", '["pending", "running"]')
        if "in" not in value:
            statuses = tuple(DEFAULT_ACTIVE_STATUSES)
        return ActiveWhen(field=field, values=frozenset(statuses))
    if callable(value):
        return value
    raise ValueError(f"expected {_ACTIVE_EXAMPLE} or a callable; got {show_value(value)}")


def _rules(value: object) -> tuple[str, ...]:
    """The rules a pipeline runs: names from RULE_NAMES, each at most once."""
    allowed = ", ".join(f'"{name}"' for name in RULE_NAMES)
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list of rule names among {allowed}; got {show_value(value)}")
    names: list[str] = []
    for name in value:
        if not isinstance(name, str) or name not in RULE_NAMES:
            hint = _suggest(name, RULE_NAMES) if isinstance(name, str) else ""
            raise ValueError(
                f"expected rule names among {allowed}; got the unknown rule {show_value(name)}"
                + (f";{hint}" if hint else "")
            )
        if name in names:
            raise ValueError(f"expected each rule at most once; got {show_value(name)} twice")
        names.append(name)
    return tuple(names)


_ASCII_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_ASCII_WHOLE = re.compile(r"[0-9]{1,30}")


def _minutes(text: str) -> float:
    """`JOB_RETENTION_MINUTES`: a number of minutes above zero (ASCII digits, at most a
    century), returned in seconds."""
    stripped = text.strip()
    minutes = float(stripped) if _ASCII_NUMBER.fullmatch(stripped) else math.nan
    if not minutes > 0:  # NaN included
        raise ValueError("expected a number of minutes above zero such as 20; got "
                         f"{show_value(text)}")
    if not minutes * 60 <= MAX_DURATION:
        raise ValueError(f"expected a number of minutes above zero such as 20; got "
                         f"{show_value(text)} (too large: at most a century)")
    return minutes * 60


def _count_text(text: str) -> int:
    """`MAX_JOBS_PER_STORE`: a whole number above zero, in ASCII digits."""
    stripped = text.strip()
    shown = show_value(text)
    if not _ASCII_WHOLE.fullmatch(stripped) or int(stripped) <= 0:
        raise ValueError(f"expected a whole number above zero such as 50; got {shown}")
    if int(stripped) > MAX_COUNT:
        raise ValueError(f"expected a whole number above zero such as 50; got {shown} (too "
                         f"large: at most {MAX_COUNT})")
    return int(stripped)


def _with_key(key: str, read: Callable[[object], Any], value: object) -> Any:
    """`read(value)`, naming `key` in any ValueError (for decorator and Python callers)."""
    try:
        return read(value)
    except ValueError as error:
        raise ValueError(f"{key}: {error}") from None


def _optional(read: Callable[[object], Any], key: str, value: object) -> Any:
    """None stays None (unbounded, unset); anything else goes through `read`, naming `key`."""
    return None if value is None else _with_key(key, read, value)


# --------------------------------------------------------------------------------------------
# Store options. The converters are named functions so mypy's attrs plugin can type them.
# --------------------------------------------------------------------------------------------


def _to_statuses(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


@attrs.frozen
class ActiveWhen:
    """Predicate: a job is active when its `field` (key or attribute) is one of `values`."""

    field: str = "status"
    values: frozenset[str] = attrs.field(default=DEFAULT_ACTIVE_STATUSES, converter=_to_statuses)

    def __call__(self, job: Any) -> bool:
        if type(job) is dict or isinstance(job, Mapping):  # dict first: skips the ABC check
            value = job.get(self.field)
        else:
            value = getattr(job, self.field, None)
        try:
            return value in self.values
        except TypeError:  # an unhashable status is no known status
            return False


def _to_max_age(value: object) -> Optional[float]:
    return _optional(positive_duration, "max_age", value)  # type: ignore[no-any-return]


def _to_max_idle(value: object) -> Optional[float]:
    return _optional(positive_duration, "max_idle", value)  # type: ignore[no-any-return]


def _to_max_jobs(value: object) -> Optional[int]:
    return _optional(positive_count, "max_jobs", value)  # type: ignore[no-any-return]


def _to_max_bytes(value: object) -> Optional[int]:
    return _optional(positive_size, "max_bytes", value)  # type: ignore[no-any-return]


def _to_active(value: object) -> Callable[[Any], bool]:
    return _with_key("active", _active, value)  # type: ignore[no-any-return]


def _to_release(value: object) -> tuple[str, ...]:
    return _with_key("release", _release, value)  # type: ignore[no-any-return]


def _to_order(value: object) -> str:
    return _with_key("order", _order, value)  # type: ignore[no-any-return]


def _to_size(value: object) -> Optional[Callable[[Any], int]]:
    if value is None or callable(value):
        return value
    raise ValueError(f"size: expected a callable job -> bytes, or None; got {show_value(value)}")


@attrs.frozen
class StorePolicy:
    """The effective rules of one store. Times in seconds, sizes in bytes, None = unbounded.

    Accepts human values as decorator arguments give them (`max_age="20m"`,
    `max_bytes="50MB"`); a bad value raises ValueError naming the option, the value and what
    is allowed.
    """

    max_age: Optional[float] = attrs.field(default=None, converter=_to_max_age)
    max_idle: Optional[float] = attrs.field(default=None, converter=_to_max_idle)
    max_jobs: Optional[int] = attrs.field(default=None, converter=_to_max_jobs)
    max_bytes: Optional[int] = attrs.field(default=None, converter=_to_max_bytes)
    active: Callable[[Any], bool] = attrs.field(factory=ActiveWhen, converter=_to_active)
    release: tuple[str, ...] = attrs.field(default=("result",), converter=_to_release)
    size: Optional[Callable[[Any], int]] = attrs.field(default=None, converter=_to_size)
    order: str = attrs.field(default="lru", converter=_to_order)

    def __attrs_post_init__(self) -> None:
        if self.max_idle is not None and self.max_age is not None and self.max_idle > self.max_age:
            raise ValueError(
                f"max_idle: {format_duration(self.max_idle)} must not exceed max_age "
                f"({format_duration(self.max_age)}); idle expiry never extends past age expiry"
            )


#: The fields of StorePolicy; also the keys `[defaults]` and `[stores.NAME]` take (but `size`).
STORE_FIELDS: tuple[str, ...] = tuple(field.name for field in attrs.fields(StorePolicy))


# --------------------------------------------------------------------------------------------
# Memory options.
# --------------------------------------------------------------------------------------------


def _to_scope(value: object) -> str:
    return _with_key("scope", _scope, value)  # type: ignore[no-any-return]


def _to_limit(value: object) -> Union[int, str, None]:
    return _with_key("limit", _limit, value)  # type: ignore[no-any-return]


def _to_warning(value: object) -> Optional[Threshold]:
    return _optional(_threshold, "warning", value)  # type: ignore[no-any-return]


def _to_warning_heap(value: object) -> Optional[Threshold]:
    return _optional(_threshold, "warning_heap", value)  # type: ignore[no-any-return]


def _to_emergency(value: object) -> Optional[Threshold]:
    return _optional(_threshold, "emergency", value)  # type: ignore[no-any-return]


def _to_emergency_target(value: object) -> Optional[Threshold]:
    return _optional(_threshold, "emergency_target", value)  # type: ignore[no-any-return]


def _to_critical(value: object) -> Optional[Threshold]:
    return _optional(_threshold, "critical", value)  # type: ignore[no-any-return]


def _to_check_interval(value: object) -> float:
    return _with_key("check_interval", positive_duration, value)  # type: ignore[no-any-return]


def _to_sample_interval(value: object) -> float:
    return _with_key("sample_interval", positive_duration, value)  # type: ignore[no-any-return]


def _to_gc_interval(value: object) -> float:
    return _with_key("gc_interval", positive_duration, value)  # type: ignore[no-any-return]


def _to_cooldown(value: object) -> float:
    return _with_key("cooldown", _any_duration, value)  # type: ignore[no-any-return]


def _to_summary_interval(value: object) -> float:
    return _with_key("summary_interval", positive_duration, value)  # type: ignore[no-any-return]


def _to_emergency_order(value: object) -> str:
    return _with_key("emergency_order", _order, value)  # type: ignore[no-any-return]


def _to_recycle(value: object) -> bool:
    return _with_key("recycle", _boolean, value)  # type: ignore[no-any-return]


def _to_signal_cleanup(value: object) -> bool:
    return _with_key("signal_cleanup", _boolean, value)  # type: ignore[no-any-return]


def _to_log_samples(value: object) -> bool:
    return _with_key("log_samples", _boolean, value)  # type: ignore[no-any-return]


def _to_watch(value: object) -> bool:
    return _with_key("watch", _boolean, value)  # type: ignore[no-any-return]


@attrs.frozen
class Thresholds:
    """Memory thresholds in bytes for one known limit (None = not set, or a percentage of a
    limit nobody knows)."""

    warning: Optional[int] = None
    warning_heap: Optional[int] = None
    emergency: Optional[int] = None
    emergency_target: Optional[int] = None
    critical: Optional[int] = None
    limit: Optional[int] = None


@attrs.frozen
class MemoryPolicy:
    """When the monitor samples, warns, cleans up and how far down it cleans.

    Thresholds are sizes in bytes or `Percent`s of `limit`. A percentage of `limit="auto"`
    stays unresolved until the monitor knows the limit (`resolve`). Accepts human values
    (`warning="400MB"`, `check_interval="2m"`) and checks warning < emergency < critical and
    emergency_target < emergency wherever the two values can be compared.
    """

    scope: str = attrs.field(default="auto", converter=_to_scope)
    limit: Union[int, str, None] = attrs.field(default="auto", converter=_to_limit)
    warning: Optional[Threshold] = attrs.field(default=Percent(0.75), converter=_to_warning)
    warning_heap: Optional[Threshold] = attrs.field(default=None, converter=_to_warning_heap)
    emergency: Optional[Threshold] = attrs.field(default=Percent(0.90), converter=_to_emergency)
    emergency_target: Optional[Threshold] = attrs.field(
        default=Percent(0.70), converter=_to_emergency_target
    )
    critical: Optional[Threshold] = attrs.field(default=Percent(1.0), converter=_to_critical)
    check_interval: float = attrs.field(default=120.0, converter=_to_check_interval)
    sample_interval: float = attrs.field(default=1.0, converter=_to_sample_interval)
    gc_interval: float = attrs.field(default=300.0, converter=_to_gc_interval)
    emergency_order: str = attrs.field(default="lru", converter=_to_emergency_order)
    cooldown: float = attrs.field(default=30.0, converter=_to_cooldown)
    recycle: bool = attrs.field(default=False, converter=_to_recycle)
    signal_cleanup: bool = attrs.field(default=False, converter=_to_signal_cleanup)
    log_samples: bool = attrs.field(default=False, converter=_to_log_samples)
    watch: bool = attrs.field(default=False, converter=_to_watch)
    summary_interval: float = attrs.field(default=600.0, converter=_to_summary_interval)

    def __attrs_post_init__(self) -> None:
        problem = _threshold_problem(_memory_values(self))
        if problem is not None:
            raise ValueError(f"{problem.key}: {problem.message}")

    def resolve(self, limit_bytes: Optional[int] = None) -> Thresholds:
        """Thresholds in bytes: percentages resolve against a numeric `limit`, else against
        `limit_bytes` (the limit the monitor detected), else stay None."""
        limit = self.limit if isinstance(self.limit, int) else limit_bytes

        def absolute(value: Optional[Threshold]) -> Optional[int]:
            if isinstance(value, Percent):
                return None if limit is None else value.of(limit)
            return value

        return Thresholds(
            warning=absolute(self.warning),
            warning_heap=absolute(self.warning_heap),
            emergency=absolute(self.emergency),
            emergency_target=absolute(self.emergency_target),
            critical=absolute(self.critical),
            limit=limit,
        )


#: The fields of MemoryPolicy; also the keys `[memory]` takes.
MEMORY_FIELDS: tuple[str, ...] = tuple(field.name for field in attrs.fields(MemoryPolicy))
#: The memory thresholds (warning_heap measures the heap, so it is outside the order).
THRESHOLD_FIELDS = ("warning", "warning_heap", "emergency", "emergency_target", "critical")
#: Pairs (lower, upper) that must satisfy lower < upper when both are set and comparable.
_THRESHOLD_ORDER = (
    ("warning", "emergency"),
    ("emergency", "critical"),
    ("warning", "critical"),
    ("emergency_target", "emergency"),
)


def _memory_values(memory: MemoryPolicy) -> dict[str, Any]:
    """The fields of `memory` by name (shallow: Percents stay Percents)."""
    return {name: getattr(memory, name) for name in MEMORY_FIELDS}


@attrs.frozen
class _ThresholdProblem:
    key: str  # the key to blame first
    other: str  # the other key of the pair (blamed when `key` was not written by the user)
    message: str


def _threshold_problem(values: Mapping[str, Any]) -> Optional[_ThresholdProblem]:
    """The first threshold rule `values` (MemoryPolicy fields by name) breaks, else None.

    Percentages need a limit. Two thresholds are compared when both are sizes, both are
    percentages, or the limit is a number (percentages then resolve). `limit` itself is not
    in the order: Heroku swaps past its quota before it restarts, so critical may exceed it.
    """
    limit = values.get("limit")
    for name in THRESHOLD_FIELDS:
        value = values.get(name)
        if isinstance(value, Percent) and limit is None:
            return _ThresholdProblem(
                name,
                name,
                f"{value} is a percentage of the memory limit, but no limit is set; "
                'expected limit = "512MB" (a size) or limit = "auto"',
            )
    for lower, upper in _THRESHOLD_ORDER:
        low, high = values.get(lower), values.get(upper)
        if low is None or high is None:
            continue
        if isinstance(low, Percent) != isinstance(high, Percent):
            if not isinstance(limit, int):
                continue
            low_value = float(low.of(limit) if isinstance(low, Percent) else low)
            high_value = float(high.of(limit) if isinstance(high, Percent) else high)
        else:
            low_value, high_value = _magnitude(low), _magnitude(high)
        if not low_value < high_value:
            blamed, other = (lower, upper) if lower == "emergency_target" else (upper, lower)
            return _ThresholdProblem(
                blamed,
                other,
                f"{lower} ({_show_threshold(low)}) must be below {upper} "
                f"({_show_threshold(high)}); expected warning < emergency < critical and "
                "emergency_target < emergency",
            )
    return None


def _magnitude(value: Threshold) -> float:
    return value.fraction if isinstance(value, Percent) else float(value)


def _show_threshold(value: Threshold) -> str:
    return str(value) if isinstance(value, Percent) else format_size(value)


# --------------------------------------------------------------------------------------------
# The TOML schema: the keys each section takes and how each value is read.
# --------------------------------------------------------------------------------------------

_MEMORY_KEYS: dict[str, Callable[[object], Any]] = {
    "scope": _scope,
    "limit": _limit,
    "warning": _threshold,
    "warning_heap": _threshold,
    "emergency": _threshold,
    "emergency_target": _threshold,
    "critical": _threshold,
    "check_interval": positive_duration,
    "sample_interval": positive_duration,
    "gc_interval": positive_duration,
    "emergency_order": _order,
    "cooldown": _any_duration,
    "recycle": _boolean,
    "signal_cleanup": _boolean,
    "log_samples": _boolean,
    "watch": _boolean,
    "summary_interval": positive_duration,
}
_STORE_KEYS: dict[str, Callable[[object], Any]] = {
    "max_age": positive_duration,
    "max_idle": positive_duration,
    "max_jobs": positive_count,
    "max_bytes": positive_size,
    "active": _active,
    "release": _release,
    "order": _order,
}
_PIPELINE_KEYS: dict[str, Callable[[object], Any]] = {"rules": _rules}


def _redis_url(value: object) -> str:
    """[redis] url: where Redis stores connect when their code gives no URL (issue 14)."""
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a Redis URL such as \"redis://127.0.0.1:6379/0\" (redis://, "
                         f"rediss:// or unix://); got {show_value(value)}")
    return value


_REDIS_KEYS: dict[str, Callable[[object], Any]] = {"url": _redis_url, "limit": positive_size}
_SECTION_KEYS: dict[str, dict[str, Callable[[object], Any]]] = {
    "memory": _MEMORY_KEYS,
    "defaults": _STORE_KEYS,
    "pipeline": _PIPELINE_KEYS,
    "redis": _REDIS_KEYS,
}
_SECTIONS = ("memory", "defaults", "pipeline", "stores", "redis")
_SECTIONS_HELP = "[memory], [defaults], [pipeline], [stores.NAME], [redis]"


# --------------------------------------------------------------------------------------------
# Policy.
# --------------------------------------------------------------------------------------------


def _store_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A copy of `options`, once every key is known to be a store option."""
    for key in options:
        if key not in STORE_FIELDS:
            hint = _suggest(str(key), STORE_FIELDS)
            raise ValueError(
                f"{where}: unknown store option {show_value(key)};{hint} allowed: "
                + ", ".join(STORE_FIELDS)
            )
    return dict(options)


def _to_defaults(value: Mapping[str, Any]) -> dict[str, Any]:
    return _store_options(value, "defaults")


def _to_stores(value: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: _store_options(options, f"stores.{name}") for name, options in value.items()}


def _to_overrides(value: Mapping[str, Any]) -> dict[str, Any]:
    return _store_options(value, "overrides")


def _to_rules(value: object) -> tuple[str, ...]:
    return _with_key("rules", _rules, value)  # type: ignore[no-any-return]


def _to_provenance(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


#: One layer of store options and how to name the origin of each of its keys.
_Layer = tuple[Mapping[str, Any], Callable[[str], str]]


@attrs.frozen
class Policy:
    """A whole policy: memory thresholds, store defaults, per-store options, env overrides.

    `defaults` and `stores` keep only what the file set, so that decorator arguments can sit
    between them in precedence; `overrides` holds the environment's knobs for every store,
    above all. `provenance` maps dotted keys (`stores.diagram.max_age`, `memory.limit`) to
    where each value came from (`policies/default.toml:31`, `env MEMGUARD_MEMORY_LIMIT`).
    """

    memory: MemoryPolicy = attrs.field(factory=MemoryPolicy)
    defaults: Mapping[str, Any] = attrs.field(factory=dict, converter=_to_defaults)
    stores: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, converter=_to_stores)
    rules: tuple[str, ...] = attrs.field(default=RULE_NAMES, converter=_to_rules)
    source: str = "<built-in>"
    overrides: Mapping[str, Any] = attrs.field(factory=dict, converter=_to_overrides)
    provenance: Mapping[str, str] = attrs.field(factory=dict, converter=_to_provenance, repr=False)
    #: `[redis]`: `url` and `limit` (bytes) of the Redis stores (memguard.redis), as read.
    redis: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_toml(
        cls,
        text: str,
        source: str = "<string>",
        *,
        environ: Optional[Mapping[str, str]] = None,
    ) -> Policy:
        """Read and validate a policy from TOML `text`; `source` names it in errors.

        The environment (`environ`, default `os.environ`) is read now and overrides the
        text; pass `environ={}` to read the text alone. Raises one `PolicyError`.
        """
        return _Loader(text, source).load(os.environ if environ is None else environ)

    @classmethod
    def default(cls, environ: Optional[Mapping[str, str]] = None) -> Policy:
        """The built-in policy with the environment's overrides (default `os.environ`)."""
        return _Loader("", "<built-in>").load(os.environ if environ is None else environ)

    def store_policy(self, name: str, declared: Optional[Mapping[str, Any]] = None) -> StorePolicy:
        """The effective policy of store `name`, given its decorator arguments `declared`.

        Precedence, lowest first: built-in, `[defaults]`, `declared` (a None value counts as
        not given), `[stores.NAME]`, environment. Raises ValueError naming a bad option.
        """
        values, _origins = self._merged(name, declared)
        return StorePolicy(**values)

    def explain(
        self, name: str, declared: Optional[Mapping[str, Any]] = None
    ) -> dict[str, tuple[Any, str]]:
        """Each StorePolicy field of store `name` -> (effective value, where it came from)."""
        values, origins = self._merged(name, declared)
        effective = StorePolicy(**values)
        return {key: (getattr(effective, key), origins[key]) for key in STORE_FIELDS}

    def explain_memory(self) -> dict[str, tuple[Any, str]]:
        """Each MemoryPolicy field, and `rules`, -> (value, where it came from)."""
        built_in = MemoryPolicy()
        result: dict[str, tuple[Any, str]] = {}
        for name in MEMORY_FIELDS:
            value = getattr(self.memory, name)
            fallback = BUILT_IN if value == getattr(built_in, name) else self.source
            result[name] = (value, self.provenance.get(_dotted(("memory", name)), fallback))
        fallback = BUILT_IN if self.rules == RULE_NAMES else self.source
        result["rules"] = (self.rules, self.provenance.get("pipeline.rules", fallback))
        return result

    def _origin(self, *path: str) -> str:
        return self.provenance.get(_dotted(path), self.source)

    def _layers(self, name: str, declared: Optional[Mapping[str, Any]]) -> list[_Layer]:
        """The option layers of store `name`, lowest precedence first."""
        given = {key: value for key, value in (declared or {}).items() if value is not None}
        return [
            (self.defaults, lambda key: self._origin("defaults", key)),
            (_store_options(given, DECORATOR), lambda key: DECORATOR),
            (self.stores.get(name, {}), lambda key: self._origin("stores", name, key)),
            (self.overrides, lambda key: self._origin("overrides", key)),
        ]

    def _merged(
        self, name: str, declared: Optional[Mapping[str, Any]]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The options of store `name` after precedence, and where each came from.

        A max_age set at a higher level than max_idle caps max_idle: a store's shorter
        lifetime (or the operator's retention knob) must not make an inherited idle limit
        invalid, and idle expiry never extends past age expiry anyway. Both set at one level
        and out of order stays an error.
        """
        values: dict[str, Any] = {}
        origins = dict.fromkeys(STORE_FIELDS, BUILT_IN)
        levels: dict[str, int] = {}
        for level, (options, origin) in enumerate(self._layers(name, declared)):
            for key, value in options.items():
                values[key], origins[key], levels[key] = value, origin(key), level
        if "max_idle" in levels and levels.get("max_age", -1) > levels["max_idle"]:
            idle, age = _to_max_idle(values["max_idle"]), _to_max_age(values["max_age"])
            if idle is not None and age is not None and idle > age:
                values["max_idle"] = age
                origins["max_idle"] = f"{origins['max_age']} (max_age caps max_idle)"
        return values, origins


# --------------------------------------------------------------------------------------------
# Where keys sit in a TOML text: a line scanner, so errors can name the line of a value.
# --------------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\')'
_KEY = re.compile(rf"[ \t]*({_KEY_PART}(?:[ \t]*\.[ \t]*{_KEY_PART})*)[ \t]*")
_POSITION = re.compile(r"\s*\((?:at line (\d+), column \d+|at end of document)\)\s*$")

_KeyPath = tuple[str, ...]


def _dotted(path: Iterable[str]) -> str:
    """A key path as TOML writes it: `stores.diagram.max_age`, `stores."a.b".max_age`."""
    return ".".join(part if _BARE_KEY.fullmatch(part) else show_value(part) for part in path)


def _key_parts(text: str) -> _KeyPath:
    """The parts of a dotted TOML key such as `a."b.c".d`, unquoted."""
    parts: list[str] = []
    for raw in re.findall(_KEY_PART, text):
        if raw.startswith('"'):
            try:
                parts.append(str(json.loads(raw)))
            except ValueError:
                parts.append(raw[1:-1])
        elif raw.startswith("'"):
            parts.append(raw[1:-1])
        else:
            parts.append(raw)
    return tuple(parts)


class _KeyLines:
    """The line of every table header and key in a TOML text, found by scanning its lines.

    Good enough for error messages, never used to read values: tomllib does that.
    """

    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.first: dict[_KeyPath, int] = {}
        self.on_line: dict[int, _KeyPath] = {}
        self.duplicate: Optional[tuple[_KeyPath, int]] = None
        self._scan()

    def _record(self, path: _KeyPath, line: int, *, repeatable: bool = False) -> None:
        if path in self.first:
            if self.duplicate is None and not repeatable:
                self.duplicate = (path, line)
            return
        self.first[path] = line
        self.on_line.setdefault(line, path)

    def _scan(self) -> None:
        table: _KeyPath = ()
        closing: Optional[str] = None  # the delimiter of the multi-line string we are in
        for number, line in enumerate(self.lines, start=1):
            if closing is not None:
                if closing in line:
                    closing = None
                continue
            stripped = line.lstrip()
            if stripped.startswith("["):
                array = stripped.startswith("[[")
                match = _KEY.match(stripped, 2 if array else 1)
                if match:
                    table = _key_parts(match.group(1))
                    self._record(table, number, repeatable=array)
                continue
            match = _KEY.match(line)
            if not match or line[match.end() : match.end() + 1] != "=":
                continue
            path = table + _key_parts(match.group(1))
            self._record(path, number)
            value = line[match.end() + 1 :].lstrip()
            if value.startswith("{"):
                self._scan_inline(path, value, number)
            for delimiter in ('"""', "'''"):
                if value.count(delimiter) % 2 == 1:
                    closing = delimiter

    def _scan_inline(self, path: _KeyPath, text: str, number: int, depth: int = 0) -> int:
        """Record the keys of the inline table at the start of `text`; return its length."""
        if depth > MAX_NESTING:  # refused by the loader; do not recurse past it here
            return len(text)
        position = 1
        while position < len(text):
            char = text[position]
            if char in " \t,":
                position += 1
                continue
            if char == "}":
                return position + 1
            match = _KEY.match(text, position)
            if not match or text[match.end() : match.end() + 1] != "=":
                return len(text)
            key = path + _key_parts(match.group(1))
            self._record(key, number)
            position = match.end() + 1
            while position < len(text) and text[position] in " \t":
                position += 1
            if text[position : position + 1] == "{":
                position += self._scan_inline(key, text[position:], number, depth + 1)
            else:
                position = _skip_value(text, position)
        return len(text)

    def line_of(self, path: _KeyPath) -> Optional[int]:
        """The line of `path`; else of its first child; else of its nearest parent."""
        if path in self.first:
            return self.first[path]
        children = [line for key, line in self.first.items() if key[: len(path)] == path]
        if children:
            return min(children)
        for end in range(len(path) - 1, 0, -1):
            if path[:end] in self.first:
                return self.first[path[:end]]
        return None

    def key_at(self, line: int) -> Optional[_KeyPath]:
        return self.on_line.get(line)

    def text_at(self, line: int) -> str:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else ""


#: How deeply arrays and inline tables may nest in a policy (the schema needs 2).
MAX_NESTING = 32
#: The longest number literal a policy may hold (none of its values needs more).
MAX_DIGITS = 64
_LONG_NUMBER = re.compile(rf"[0-9_]{{{MAX_DIGITS + 1},}}")


def _too_deep_or_long(text: str) -> Optional[tuple[int, str]]:
    """(line, message) for the first array or inline table nested deeper than MAX_NESTING,
    or number longer than MAX_DIGITS, outside strings and comments; else None."""
    depth = 0
    line = 1
    position = 0
    length = len(text)
    while position < length:
        char = text[position]
        if char == "\n":
            line += 1
        elif char == "#":
            end = text.find("\n", position)
            position = length if end < 0 else end
            continue
        elif char in "\"'":
            triple = text.startswith(char * 3, position)
            closing = char * 3 if triple else char
            end = position + len(closing)
            while True:
                end = text.find(closing, end)
                if end < 0 or char == "'" or text[end - 1] != "\\" or _escaped_backslash(text, end):
                    break
                end += 1
            stop = length if end < 0 else end + len(closing)
            if not triple and "\n" in text[position:stop]:
                stop = text.find("\n", position)  # an unclosed string ends at its line
            line += text.count("\n", position, stop)
            position = stop
            continue
        elif char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return line, (f"arrays or inline tables nested over {MAX_NESTING} levels deep; "
                              "expected plain values such as max_age = \"20m\" or "
                              "active = { field = \"status\", in = [\"running\"] }")
        elif char in "]}":
            depth = max(0, depth - 1)
        elif char in "0123456789":
            match = _LONG_NUMBER.match(text, position)
            if match:
                return line, (f"got a number of {len(match.group())} digits; expected at "
                              f"most {MAX_DIGITS} digits (e.g. max_jobs = 50)")
            while position < length and text[position] in "0123456789_":
                position += 1
            continue
        position += 1
    return None


def _escaped_backslash(text: str, end: int) -> bool:
    """True when the quote at `end` follows an even run of backslashes (it closes)."""
    run = 0
    while end - run - 1 >= 0 and text[end - run - 1] == "\\":
        run += 1
    return run % 2 == 0


def _skip_value(text: str, position: int) -> int:
    """The index just past the inline value starting at `position` (at `,` or `}`)."""
    depth = 0
    quote: Optional[str] = None
    while position < len(text):
        char = text[position]
        if quote is not None:
            if char == "\\" and quote == '"':
                position += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            if depth == 0:
                return position
            depth -= 1
        elif char == "," and depth == 0:
            return position
        position += 1
    return position


# --------------------------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------------------------


class _Loader:
    """Reads one TOML text into a Policy, tracking the line and provenance of every value."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.where = _KeyLines(text)
        self.provenance: dict[str, str] = {}
        self.raw: dict[_KeyPath, object] = {}

    def error(self, path: _KeyPath, message: str) -> PolicyError:
        """A PolicyError at `path` naming the line where its value sits."""
        return PolicyError(
            message, source=self.source, line=self.where.line_of(path), key=_dotted(path)
        )

    def read(self, path: _KeyPath, read: Callable[[object], Any], value: object) -> Any:
        """`read(value)`, recording provenance; a ValueError becomes a PolicyError at `path`."""
        try:
            parsed = read(value)
        except ValueError as error:
            raise self.error(path, str(error)) from None
        line = self.where.line_of(path)
        self.provenance[_dotted(path)] = self.source if line is None else f"{self.source}:{line}"
        self.raw[path] = value
        return parsed

    def load(self, environ: Mapping[str, str]) -> Policy:
        document = self.decode()
        sections = {name: self.section(name, value) for name, value in document.items()}
        memory = sections.get("memory", {})
        defaults = sections.get("defaults", {})
        stores: dict[str, dict[str, Any]] = sections.get("stores", {})
        rules = sections.get("pipeline", {}).get("rules", RULE_NAMES)
        env = _Environment(environ, self.provenance)
        memory.update(env.memory())
        self.check_percentages(memory)
        overrides = env.overrides()
        memory_policy = self.memory_policy(memory)
        self.check_stores(defaults, stores)
        return Policy(
            memory=memory_policy,
            defaults=defaults,
            stores=stores,
            rules=rules,
            source=self.source,
            overrides=overrides,
            provenance=self.provenance,
            redis=sections.get("redis", {}),
        )

    def decode(self) -> dict[str, Any]:
        """The TOML document; a syntax error becomes a PolicyError at its line.

        Nesting deeper than MAX_NESTING and numbers longer than MAX_DIGITS are refused first:
        tomllib would raise RecursionError, or a bare ValueError past Python's int digit limit.
        """
        problem = _too_deep_or_long(self.text)
        if problem is not None:
            line, message = problem
            path = self.where.key_at(line)
            raise PolicyError(message, source=self.source, line=line,
                              key=_dotted(path) if path else None)
        try:
            return tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as error:
            raise self.syntax_error(str(error)) from None
        except (ValueError, RecursionError) as error:  # not a TOMLDecodeError: no position
            raise PolicyError(f"not valid TOML: {error}; expected TOML such as max_age = "
                              '"20m"', source=self.source) from None

    def syntax_error(self, reason: str) -> PolicyError:
        if reason.startswith("Cannot ") and self.where.duplicate is not None:
            twice, again = self.where.duplicate
            first = self.where.first[twice]
            return PolicyError(
                f"{_dotted(twice)} is set twice (first at line {first}); expected each table "
                "and key at most once: merge the two",
                source=self.source,
                line=again,
                key=_dotted(twice),
            )
        position = _POSITION.search(reason)
        line = int(position.group(1)) if position and position.group(1) else None
        path = self.where.key_at(line) if line is not None else None
        text = self.where.text_at(line).strip() if line is not None else ""
        return PolicyError(
            f"not valid TOML: {reason[: position.start()] if position else reason}"
            + (f"; got {text!r}" if text else "")
            + '; expected TOML such as max_age = "20m" (strings in quotes, one key = value '
            "per line, [section] headers)",
            source=self.source,
            line=line,
            key=_dotted(path) if path else None,
        )

    def section(self, name: str, value: object) -> dict[str, Any]:
        """One top-level section, read; unknown sections are refused with a suggestion."""
        if name not in _SECTIONS:
            owner = next((s for s, keys in _SECTION_KEYS.items() if name in keys), None)
            hint = f" {name} belongs in [{owner}];" if owner else _suggest(name, _SECTIONS)
            what = "section" if isinstance(value, Mapping) else "top-level key"
            raise self.error(
                (name,), f"unknown {what} {show_value(name)};{hint} allowed: {_SECTIONS_HELP}"
            )
        table = self.table((name,), value)
        if name == "stores":
            return {store: self.store(store, options) for store, options in table.items()}
        return self.keys((name,), table, _SECTION_KEYS[name])

    def table(self, path: _KeyPath, value: object) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected a table [{_dotted(path)}]; got {show_value(value)}")
        return value

    def store(self, name: str, value: object) -> dict[str, Any]:
        path = ("stores", name)
        if not name.strip():
            raise self.error(path, f"expected a store name such as [stores.diagram]; got {name!r}")
        return self.keys(path, self.table(path, value), _STORE_KEYS)

    def keys(
        self,
        where: _KeyPath,
        table: Mapping[str, Any],
        schema: Mapping[str, Callable[[object], Any]],
    ) -> dict[str, Any]:
        """Every key of `table` read by `schema`; unknown keys refused with a suggestion."""
        values: dict[str, Any] = {}
        for key, value in table.items():
            path = (*where, key)
            read = schema.get(key)
            if read is None:
                owner = next((s for s, keys in _SECTION_KEYS.items() if key in keys), None)
                misplaced = owner is not None and _SECTION_KEYS[owner] is not schema
                hint = f" {key} belongs in [{owner}];" if misplaced else _suggest(key, schema)
                raise self.error(
                    path,
                    f"unknown key {show_value(key)} in [{_dotted(where)}];{hint} allowed: "
                    + ", ".join(schema),
                )
            if key == "active" and isinstance(value, Mapping):
                self.check_active(path, value)
            values[key] = self.read(path, read, value)
        return values

    def check_active(self, path: _KeyPath, table: Mapping[str, Any]) -> None:
        """Unknown keys in an `active` table are named at their own key path."""
        for key in table:
            if key not in ("field", "in"):
                raise self.error(
                    (*path, key),
                    f"unknown key {show_value(key)} in the active table;"
                    f"{_suggest(key, ('field', 'in'))} allowed: field, in "
                    '(e.g. active = { field = "status", in = ["running"] })',
                )

    def check_percentages(self, memory: Mapping[str, Any]) -> None:
        """A percentage in [memory] needs the file (or the environment) to set `limit`."""
        if "limit" in memory:
            return
        for name in THRESHOLD_FIELDS:
            if isinstance(memory.get(name), Percent):
                path = ("memory", name)
                raise self.error(
                    path,
                    f"got {show_value(self.raw[path])}, a percentage of the memory limit, but "
                    '[memory] sets no limit; expected limit = "512MB" (a size) or '
                    'limit = "auto" as well, or a size such as "400MB" here',
                )

    def memory_policy(self, memory: dict[str, Any]) -> MemoryPolicy:
        """The MemoryPolicy, once its thresholds are known to be in order."""
        problem = _threshold_problem({**_memory_values(MemoryPolicy()), **memory})
        if problem is None:
            return MemoryPolicy(**memory)
        for name in (problem.key, problem.other):
            path = ("memory", name)
            if path in self.raw:
                raise self.error(path, f"got {show_value(self.raw[path])}; {problem.message}")
        raise PolicyError(
            f"{problem.message} (with the limit this variable sets)",
            source=ENVIRONMENT,
            key=ENV_MEMORY_LIMIT,
        )

    def check_stores(self, defaults: Mapping[str, Any], stores: Mapping[str, Any]) -> None:
        """[defaults] alone, and each [stores.NAME] over it, must keep max_idle <= max_age."""
        self.check_idle(("defaults",), defaults, {})
        for name, options in stores.items():
            self.check_idle(("stores", name), defaults, options)

    def check_idle(
        self, section: _KeyPath, defaults: Mapping[str, Any], options: Mapping[str, Any]
    ) -> None:
        """max_idle above max_age is an error when max_idle is set at the same or a higher
        level (a higher-level max_age caps it instead: see `Policy._merged`)."""
        age = options.get("max_age", defaults.get("max_age"))
        idle = options.get("max_idle", defaults.get("max_idle"))
        if age is None or idle is None or idle <= age:
            return
        if "max_age" in options and "max_idle" not in options:
            return
        path = (*section, "max_idle") if "max_idle" in options else ("defaults", "max_idle")
        raise self.error(
            path,
            f"got {show_value(self.raw[path])}; max_idle ({format_duration(idle)}) must not "
            f"exceed max_age ({format_duration(age)}): idle expiry never extends past age expiry",
        )


class _Environment:
    """The environment's overrides, read and validated at load time; records provenance."""

    def __init__(self, environ: Mapping[str, str], provenance: dict[str, str]) -> None:
        self.environ = {key: value for key, value in environ.items() if value.strip()}
        self.provenance = provenance

    def read(self, variable: str, read: Callable[[str], Any], key: str) -> Any:
        try:
            value = read(self.environ[variable])
        except ValueError as error:
            raise PolicyError(str(error), source=ENVIRONMENT, key=variable) from None
        self.provenance[key] = f"env {variable}"
        return value

    def memory(self) -> dict[str, Any]:
        """`memory.limit` and `memory.check_interval`, where the environment sets them."""
        values: dict[str, Any] = {}
        if ENV_MEMORY_LIMIT in self.environ:
            values["limit"] = self.read(ENV_MEMORY_LIMIT, _limit, "memory.limit")
        if ENV_CHECK_INTERVAL in self.environ:
            values["check_interval"] = self.read(
                ENV_CHECK_INTERVAL, positive_duration, "memory.check_interval"
            )
        return values

    def overrides(self) -> dict[str, Any]:
        """`max_age` / `max_jobs` of every store, where the operator's knobs set them."""
        values: dict[str, Any] = {}
        if ENV_JOB_RETENTION_MINUTES in self.environ:
            values["max_age"] = self.read(ENV_JOB_RETENTION_MINUTES, _minutes, "overrides.max_age")
        if ENV_MAX_JOBS_PER_STORE in self.environ:
            values["max_jobs"] = self.read(
                ENV_MAX_JOBS_PER_STORE, _count_text, "overrides.max_jobs"
            )
        return values


# --------------------------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------------------------


def load_policy(
    path_or_text: Union[str, os.PathLike[str]],
    *,
    environ: Optional[Mapping[str, str]] = None,
) -> Policy:
    """A policy from a file (a path that exists or ends in `.toml`), a bundled policy's name
    (``"default"``, see `bundled_policy_names`), or TOML text.

    The environment (`environ`, default `os.environ`) overrides the file, as DESIGN section 5
    says. Raises one `PolicyError` naming the file, line, key, bad value and what is allowed.
    """
    if isinstance(path_or_text, os.PathLike) or _looks_like_path(path_or_text):
        path = Path(path_or_text)
        return Policy.from_toml(_read(path), source=os.fspath(path_or_text), environ=environ)
    if _BARE_NAME.match(path_or_text):  # one bare word is never TOML: a bundled policy's name
        path = _bundled_by_name(path_or_text.strip())
        return Policy.from_toml(_read(path), source=os.fspath(path), environ=environ)
    return Policy.from_toml(path_or_text, environ=environ)


_BARE_NAME = re.compile(r"\s*[A-Za-z0-9][A-Za-z0-9_.-]*\s*\Z")


def _bundled_by_name(name: str) -> Path:
    """The bundled policy `name`, or a PolicyError listing the names there are."""
    try:
        return bundled_policy(name)
    except FileNotFoundError:
        names = bundled_policy_names()
        hint = _suggest(name, names)
        raise PolicyError(
            f"{name!r} is neither a policy file nor a bundled policy; bundled policies: "
            f"{', '.join(names) or 'none found'}" + (f";{hint}" if hint else ""),
            source="<name>",
        ) from None


def _looks_like_path(text: str) -> bool:
    """True for a one-line string naming an existing file or ending in `.toml`."""
    if "\n" in text or "=" in text:
        return False
    stripped = text.strip()
    try:
        return stripped.endswith(".toml") or Path(stripped).is_file()
    except (OSError, ValueError):
        return False


def _read(path: Path) -> str:
    """The text of a policy file; failures become PolicyErrors naming the file.

    Only regular files: a FIFO, device or directory is refused (opened without blocking,
    so a FIFO nobody writes to cannot hang the load)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise PolicyError("cannot read the policy: not a regular file (a FIFO, device "
                                  "or directory); expected a TOML file", source=os.fspath(path))
            with os.fdopen(descriptor, "rb", closefd=False) as stream:
                data = stream.read(MAX_POLICY_BYTES + 1)
        finally:
            os.close(descriptor)
        if len(data) > MAX_POLICY_BYTES:
            raise PolicyError(f"cannot read the policy: over {MAX_POLICY_BYTES} bytes; expected "
                              "a TOML policy file", source=os.fspath(path))
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PolicyError(
            f"cannot read the policy: not UTF-8 ({error.reason} at byte {error.start}); "
            "expected a UTF-8 TOML file",
            source=os.fspath(path),
        ) from None
    except OSError as error:
        raise PolicyError(
            f"cannot read the policy: {error.strerror or error}; expected a readable TOML file",
            source=os.fspath(path),
        ) from None


#: The largest policy file read (policies are a few kilobytes).
MAX_POLICY_BYTES = 1024 * 1024


def policy_from_environment(environ: Optional[Mapping[str, str]] = None) -> Policy:
    """The policy the default manager runs: the file `MEMGUARD_POLICY` names, else the
    built-in one; the other environment overrides apply on top either way."""
    env = os.environ if environ is None else environ
    path = env.get(ENV_POLICY, "").strip()
    if not path:
        return Policy.default(env)
    if not Path(path).is_file() and path in bundled_policy_names():
        return load_policy(path, environ=env)
    if not Path(path).is_file():
        raise PolicyError(
            f"no policy file at {path!r}; expected the path of a TOML policy file",
            source=ENVIRONMENT,
            key=ENV_POLICY,
        )
    return load_policy(Path(path), environ=env)


def _bundled_dirs() -> tuple[Path, ...]:
    """Where the ready policies live: inside an installed wheel, or at the source tree root."""
    package = Path(__file__).resolve().parent
    return (package / "_policies", package.parent / "policies")


def bundled_policy_names() -> tuple[str, ...]:
    """The names of the ready policies shipped with memguard (`"default"`, ...), sorted."""
    for directory in _bundled_dirs():
        if directory.is_dir():
            return tuple(sorted(path.stem for path in directory.glob("*.toml")))
    return ()


def bundled_policy(name: str = "default") -> Path:
    """The path of the ready policy `name` (`"default"` or `"default.toml"`).

    Raises FileNotFoundError naming the policies there are.
    """
    filename = name if name.endswith(".toml") else f"{name}.toml"
    for directory in _bundled_dirs():
        candidate = directory / filename
        if candidate.is_file():
            return candidate
    known = ", ".join(bundled_policy_names()) or "none found"
    raise FileNotFoundError(f"no bundled policy {name!r}; available: {known}")
