"""Policies: the whole TOML file, read and validated, and how each store's options follow
from it.

`Policy` holds the memory options, `[defaults]`, `[pipeline]`, `[stores.NAME]`, `[redis]` and
the environment's overrides, and computes each store's effective `StorePolicy` from built-in
defaults, `[defaults]`, decorator arguments, `[stores.NAME]` and the environment (lowest
precedence first), with where each value came from (`explain`). `load_policy` reads a file,
TOML text or a bundled policy's name; a file is applied entirely or not at all, and every
mistake is one `PolicyError` naming the file, the line, the dotted key, the bad value and what
is allowed. The options themselves live in `memguard.options` (re-exported here).
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional, Union

import attrs

from memguard._toml_lines import (
    _POSITION,
    _dotted,
    _KeyLines,
    _KeyPath,
    _too_deep_or_long,
)
from memguard._units import (
    Percent,
    positive_count,
    positive_duration,
    positive_size,
    show_value,
)
from memguard.errors import PolicyError
from memguard.memory import SCOPES
from memguard.options import (  # the options' public names are re-exported for old imports
    BUILT_IN,
    DECORATOR,
    DEFAULT_ACTIVE_STATUSES,
    ENV_CHECK_INTERVAL,
    ENV_JOB_RETENTION_MINUTES,
    ENV_MAX_JOBS_PER_STORE,
    ENV_MEMORY_LIMIT,
    ENV_POLICY,
    ENV_TOKEN,
    ENVIRONMENT,
    ENVIRONMENT_KNOBS,
    MEMORY_FIELDS,
    ORDERS,
    RULE_NAMES,
    STORE_FIELDS,
    THRESHOLD_FIELDS,
    ActiveWhen,
    MemoryPolicy,
    StorePolicy,
    Threshold,
    Thresholds,
    _active,
    _any_duration,
    _boolean,
    _count_text,
    _idle_problem,
    _limit,
    _memory_values,
    _minutes,
    _order,
    _release,
    _rules,
    _scope,
    _suggest,
    _threshold,
    _threshold_problem,
    _with_key,
    option,
)

__all__ = [
    "DEFAULT_ACTIVE_STATUSES",
    "ENVIRONMENT_KNOBS",
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

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9 and 3.10 only
    import tomli as tomllib

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
    rules: tuple[str, ...] = option(_rules, default=RULE_NAMES)
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
            age = _with_key("max_age", _STORE_KEYS["max_age"], values["max_age"])
            idle = _with_key("max_idle", _STORE_KEYS["max_idle"], values["max_idle"])
            if _idle_problem(age, idle) is not None:
                values["max_idle"] = age
                origins["max_idle"] = f"{origins['max_age']} (max_age caps max_idle)"
        return values, origins


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
        if "max_age" in options and "max_idle" not in options:
            return
        problem = _idle_problem(
            options.get("max_age", defaults.get("max_age")),
            options.get("max_idle", defaults.get("max_idle")),
        )
        if problem is not None:
            path = (*section, "max_idle") if "max_idle" in options else ("defaults", "max_idle")
            raise self.error(path, f"got {show_value(self.raw[path])}; {problem}")


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
