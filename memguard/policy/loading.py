"""Reading a policy from TOML text: every value checked, every error naming file, line and key."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, Callable

from memguard.errors import PolicyError
from memguard.policy.options import (
    ENV_CHECK_INTERVAL,
    ENV_JOB_RETENTION_MINUTES,
    ENV_MAX_JOBS_PER_STORE,
    ENV_MEMORY_LIMIT,
    ENVIRONMENT,
    RULE_NAMES,
    MemoryPolicy,
    _count_text,
    _idle_problem,
    _limit,
    _memory_values,
    _minutes,
    _suggest,
)
from memguard.policy.provenance import _POSITION, _dotted, _KeyLines, _KeyPath, _too_deep_or_long
from memguard.policy.schema import _SECTION_KEYS, _SECTIONS, _SECTIONS_HELP, _STORE_KEYS
from memguard.policy.thresholds import THRESHOLD_FIELDS, threshold_problem
from memguard.policy.units import Percent, positive_duration, show_value


def _toml() -> Any:
    """The TOML parser, imported when a policy file is first read, not by `import memguard`
    (tomllib and the datetime module it loads are about 0.8 MB that most processes, given
    no policy file, never use)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9 and 3.10 only
        import tomli as tomllib
    return tomllib




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

    def load(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """The fields of the `Policy` the text describes (Policy builds itself from them)."""
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
        return dict(
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
        if not self.text.strip():  # the built-in policy: no need to load the TOML parser
            return {}
        problem = _too_deep_or_long(self.text)
        if problem is not None:
            line, message = problem
            path = self.where.key_at(line)
            raise PolicyError(message, source=self.source, line=line,
                              key=_dotted(path) if path else None)
        tomllib = _toml()
        try:
            table: dict[str, Any] = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as error:
            raise self.syntax_error(str(error)) from None
        except (ValueError, RecursionError) as error:  # not a TOMLDecodeError: no position
            raise PolicyError(f"not valid TOML: {error}; expected TOML such as max_age = "
                              '"20m"', source=self.source) from None
        return table

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
        problem = threshold_problem({**_memory_values(MemoryPolicy()), **memory})
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
