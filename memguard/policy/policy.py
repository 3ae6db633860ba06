"""`Policy`: a whole policy (memory and store options, pipeline) and how it applies to a store."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, Callable, Optional

import attrs

from memguard.policy.loading import _Loader
from memguard.policy.options import (
    BUILT_IN,
    DECORATOR,
    MEMORY_FIELDS,
    RULE_NAMES,
    STORE_FIELDS,
    MemoryPolicy,
    StorePolicy,
    _idle_problem,
    _rules,
    _suggest,
    _with_key,
    option,
)
from memguard.policy.provenance import _dotted
from memguard.policy.schema import _STORE_KEYS
from memguard.policy.units import show_value

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.9 and 3.10 only
    pass




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
        return cls(**_Loader(text, source).load(os.environ if environ is None else environ))

    @classmethod
    def default(cls, environ: Optional[Mapping[str, str]] = None) -> Policy:
        """The built-in policy with the environment's overrides (default `os.environ`)."""
        return cls(**_Loader("", "<built-in>").load(os.environ if environ is None else environ))

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

    def overridden(
        self, name: str, declared: Optional[Mapping[str, Any]] = None
    ) -> list[tuple[str, Any, Any, str]]:
        """The decorator arguments of store `name` that this policy overrides with another
        value: (key, the decorator's value, the effective value, where that came from), both
        values as the policy holds them (seconds, bytes). Empty unless `[stores.NAME]` or an
        override sets something: only those rank above the decorator."""
        given = {key: value for key, value in (declared or {}).items() if value is not None}
        if not given or not (self.stores.get(name) or self.overrides):
            return []
        explained = self.explain(name, given)
        found = []
        for key, value in given.items():
            effective, origin = explained[key]
            if origin == DECORATOR:
                continue
            try:
                mine = getattr(StorePolicy(**{key: value}), key)
            except (TypeError, ValueError):
                mine = value
            if mine != effective:
                found.append((key, mine, effective, origin))
        return found

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
