"""Policy options: what one store keeps (`StorePolicy`) and when the monitor steps in
(`MemoryPolicy`, whose thresholds `memguard.policy.thresholds` reads and orders), and the
readers that turn what a user wrote into them.

Frozen attrs classes whose fields are `option`s, each with a reader: a decorator argument
(`max_age="20m"`) or a TOML value is read once, here, and a bad one raises ValueError naming
the option, the value and what is allowed (the TOML loader in `memguard.policy` adds the file
and line). Also the one home of
the names these options take: orders, rule names, active statuses, environment knobs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Final, Optional, Union

import attrs

from memguard.policy.thresholds import (
    Threshold,
    Thresholds,
    parse_threshold,
    threshold_problem,
)
from memguard.policy.units import (
    MAX_COUNT,
    MAX_DURATION,
    Percent,
    format_duration,
    parse_duration,
    positive_count,
    positive_duration,
    positive_size,
    show_value,
)

#: Statuses that mark a job as still being worked on (never evicted).
DEFAULT_ACTIVE_STATUSES = frozenset({"pending", "queued", "running", "processing", "in_progress"})
#: Eviction orders a store (or the emergency rule) may use.
ORDERS = ("lru", "oldest", "largest", "delivered")
#: What a store's bounds are (`bounds = "soft"` turns them into priorities, DESIGN section 10).
BOUNDS = ("hard", "soft")
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

#: A value reader: what a user wrote -> the canonical value, or ValueError("expected ...; got ...").
Reader = Callable[[object], Any]



SCOPES: Final = ("process", "cgroup", "auto")
"""Where memory is read from, as a policy's ``scope`` says it (the one home of these names):
`make_probe` takes any of them; a sample's `MemorySample.scope` is one of the first two."""
# the canonical value, or raises ValueError("expected ...; got ..."); callers add the where.


def _suggest(word: str, options: Iterable[str]) -> str:
    """`' did you mean "x"?'` when `word` is close to one of `options`, else `''`."""
    import difflib  # error paths only: not loaded by `import memguard`

    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f' did you mean "{close[0]}"?' if close else ""


def _any_duration(value: object) -> float:
    """A duration of zero or more, in seconds (zero turns a wait off)."""
    return parse_duration(value)


def _limit(value: object) -> Union[int, str, None]:
    """The memory limit: `"auto"` (the container's limit, else none known) or a size above
    zero."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return positive_size(value)
    except ValueError as error:
        raise ValueError(f'{error}; or "auto" (the container limit, else none)') from None


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


def _bounds(value: object) -> str:
    """What a store's max_age, max_idle, max_jobs and max_bytes are: "hard" deadlines (the
    seed's behaviour) or "soft" priorities (a job past one is evicted first, under memory
    pressure only)."""
    return _choice(value, BOUNDS, 'a kind of bounds ("hard": deadlines; "soft": priorities, '
                                  'enforced at or above warning or in an emergency)')


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


def _with_key(key: str, read: Reader, value: object) -> Any:
    """`read(value)`, naming `key` in any ValueError (for decorator and Python callers)."""
    try:
        return read(value)
    except ValueError as error:
        raise ValueError(f"{key}: {error}") from None


def option(read: Reader, *, default: Any, optional: bool = False) -> Any:
    """An attrs field whose value goes through `read`; a ValueError names the field
    (`max_age: expected a duration ...`). With `optional`, None stays None (unset, unbounded).

    The field's name comes from attrs (`takes_field`), so it cannot drift from the attribute.
    Returns Any, like `attrs.field`, but mypy's attrs plugin does not see through it: it types
    the `__init__` parameter by the field's annotation (docs/decisions.md, "Option fields").
    """

    def convert(value: object, field: attrs.Attribute[Any]) -> Any:
        if optional and value is None:
            return None
        return _with_key(field.name, read, value)

    return attrs.field(default=default, converter=attrs.Converter(convert, takes_field=True))




def _to_statuses(values: Iterable[str]) -> frozenset[str]:
    """Not an `option`: it only freezes an iterable (nothing to read, no error to name), and
    as a named function its `Iterable[str]` parameter types `ActiveWhen.__init__` for mypy."""
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


def _size(value: object) -> Callable[..., Any]:
    """The store's own size estimate: a callable job -> bytes."""
    if callable(value):
        return value
    raise ValueError(f"expected a callable job -> bytes, or None; got {show_value(value)}")


@attrs.frozen
class StorePolicy:
    """The effective rules of one store. Times in seconds, sizes in bytes, None = unbounded.

    Accepts human values as decorator arguments give them (`max_age="20m"`,
    `max_bytes="50MB"`); a bad value raises ValueError naming the option, the value and what
    is allowed.
    """

    max_age: Optional[float] = option(positive_duration, default=None, optional=True)
    max_idle: Optional[float] = option(positive_duration, default=None, optional=True)
    max_jobs: Optional[int] = option(positive_count, default=None, optional=True)
    max_bytes: Optional[int] = option(positive_size, default=None, optional=True)
    #: An active job not written for this long is abandoned (its worker died): evictable.
    max_running: Optional[float] = option(positive_duration, default=None, optional=True)
    active: Callable[[Any], bool] = option(_active, default=attrs.Factory(ActiveWhen))
    release: tuple[str, ...] = option(_release, default=("result",))
    size: Optional[Callable[[Any], int]] = option(_size, default=None, optional=True)
    order: str = option(_order, default="lru")
    #: "hard" (default): the bounds above are deadlines. "soft": they are priorities; a job
    #: past one is evicted first, at a pass at or above `warning` or in an emergency.
    bounds: str = option(_bounds, default="hard")
    #: A deadline that stays one when `bounds = "soft"`: data that must not outlive it.
    max_age_hard: Optional[float] = option(positive_duration, default=None, optional=True)

    def __attrs_post_init__(self) -> None:
        problem = _idle_problem(self.max_age, self.max_idle)
        if problem is not None:
            raise ValueError(problem)


def _idle_problem(max_age: Optional[float], max_idle: Optional[float]) -> Optional[str]:
    """What is wrong when max_idle exceeds max_age (idle expiry never extends past age
    expiry), else None (also when either is unset). The one home of that rule: StorePolicy
    raises it, the TOML loader places it at the file, line and key that set max_idle, and
    `Policy` caps an inherited max_idle with it."""
    if max_age is None or max_idle is None or max_idle <= max_age:
        return None
    return (
        f"max_idle: {format_duration(max_idle)} must not exceed max_age "
        f"({format_duration(max_age)}); idle expiry never extends past age expiry"
    )


#: The fields of StorePolicy; also the keys `[defaults]` and `[stores.NAME]` take (but `size`).
STORE_FIELDS: tuple[str, ...] = tuple(field.name for field in attrs.fields(StorePolicy))




@attrs.frozen
class MemoryPolicy:
    """When the monitor samples, warns, cleans up and how far down it cleans.

    Thresholds are sizes in bytes or `Percent`s of `limit`. A percentage of `limit="auto"`
    stays unresolved until the monitor knows the limit (`resolve`). Accepts human values
    (`warning="400MB"`, `check_interval="2m"`) and checks warning < emergency < critical and
    emergency_target < emergency wherever the two values can be compared.
    """

    scope: str = option(_scope, default="auto")
    limit: Union[int, str, None] = option(_limit, default="auto")
    warning: Optional[Threshold] = option(parse_threshold, default=Percent(0.75), optional=True)
    warning_heap: Optional[Threshold] = option(parse_threshold, default=None, optional=True)
    emergency: Optional[Threshold] = option(parse_threshold, default=Percent(0.90), optional=True)
    emergency_target: Optional[Threshold] = option(
        parse_threshold, default=Percent(0.70), optional=True
    )
    critical: Optional[Threshold] = option(parse_threshold, default=Percent(1.0), optional=True)
    check_interval: float = option(positive_duration, default=120.0)
    sample_interval: float = option(positive_duration, default=0.25)
    gc_interval: float = option(positive_duration, default=300.0)
    emergency_order: str = option(_order, default="delivered")
    cooldown: float = option(_any_duration, default=30.0)
    recycle: bool = option(_boolean, default=False)
    signal_cleanup: bool = option(_boolean, default=False)
    log_samples: bool = option(_boolean, default=False)
    watch: bool = option(_boolean, default=False)
    summary_interval: float = option(positive_duration, default=600.0)

    def __attrs_post_init__(self) -> None:
        problem = threshold_problem(_memory_values(self))
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


def _memory_values(memory: MemoryPolicy) -> dict[str, Any]:
    """The fields of `memory` by name (shallow: Percents stay Percents)."""
    return {name: getattr(memory, name) for name in MEMORY_FIELDS}


