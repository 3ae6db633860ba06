"""Any text, and any document built from the schema with any values, loads or is a PolicyError."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memguard.errors import PolicyError
from memguard.policy.options import MEMORY_FIELDS, STORE_FIELDS, StorePolicy
from memguard.policy.policy import Policy

#: Values a user might plausibly write, so that generated documents often get past the types.
PLAUSIBLE = st.sampled_from(
    ["20m", "90s", "1h30m", "0", "-5m", "512MB", "1.5GiB", "80%", "0%", "150%", "auto", "lru",
     "oldest", "largest", "process", "cgroup", "result", "status", "age", "idle", "emergency",
     "", " ", "20 minutes", "1e3", "9" * 40 + "TB", "9" * 400 + "%"]
)  # fmt: skip
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
SCALARS = st.one_of(
    PLAUSIBLE,
    TEXT,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(min_value=datetime.datetime(1, 1, 1)),
    st.dates(),
    st.times(),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(["field", "in", "x", "max_age"]) | TEXT, children, max_size=3
        ),
    ),
    max_leaves=8,
)


def _key(key: str) -> str:
    """`key` as a TOML basic string (JSON escapes are TOML escapes; DEL must be escaped too)."""
    return json.dumps(key, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    """`value` as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _key(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def _table(header: str, table: dict[str, Any]) -> str:
    return f"[{header}]\n" + "".join(f"{_key(k)} = {_value(v)}\n" for k, v in table.items())


def _tables(keys: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(keys, VALUES, max_size=6)


STORE_KEYS = st.sampled_from([key for key in STORE_FIELDS if key != "size"]) | TEXT
DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "memory": _tables(st.sampled_from(MEMORY_FIELDS) | TEXT),
        "defaults": _tables(STORE_KEYS),
        "pipeline": _tables(st.just("rules") | TEXT),
        "stores": st.dictionaries(
            st.sampled_from(["diagram", "iac", "a.b", ""]) | TEXT, _tables(STORE_KEYS), max_size=3
        ),
        "extra": _tables(TEXT),
    },
)
ENVIRONS = st.dictionaries(
    st.sampled_from(
        ["MEMGUARD_MEMORY_LIMIT", "MEMGUARD_CHECK_INTERVAL", "JOB_RETENTION_MINUTES",
         "MAX_JOBS_PER_STORE"]
    ),
    PLAUSIBLE | TEXT.filter(lambda text: "\x00" not in text) | st.integers().map(str),
)  # fmt: skip


def _render(document: dict[str, Any]) -> str:
    parts = []
    for section, table in document.items():
        if section == "stores":
            parts += [_table(f"stores.{_key(name)}", options) for name, options in table.items()]
        else:
            parts.append(_table(section, table))
    return "\n".join(parts)


def _loads_or_policy_error(text: str, environ: dict[str, str]) -> None:
    """Loading gives a Policy whose every store works, or a PolicyError; nothing else."""
    try:
        policy = Policy.from_toml(text, "fuzz.toml", environ=environ)
    except PolicyError as error:
        assert error.source in ("fuzz.toml", "environment")
        assert len(str(error).splitlines()) == 1
        return
    for name in [*policy.stores, "unlisted"]:
        assert isinstance(policy.store_policy(name), StorePolicy)
        assert set(policy.explain(name)) == set(STORE_FIELDS)
    policy.memory.resolve(512 * 1024**2)
    policy.explain_memory()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_any_text_loads_or_is_a_policy_error(text: str) -> None:
    _loads_or_policy_error(text, {})


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["[memory]", "[stores.a]", "[stores.a]", "limit = ", '"80%"',
                                 "max_age", " = ", "{", "}", "[", "]", "\n", '"""', "#", ",",
                                 "'", "a.b", "=", '"20m"', "active = { field = "]), max_size=30)
       .map("".join))  # fmt: skip
def test_toml_like_text_loads_or_is_a_policy_error(text: str) -> None:
    _loads_or_policy_error(text, {})


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS, ENVIRONS)
def test_schema_documents_load_or_are_a_policy_error(
    document: dict[str, Any], environ: dict[str, str]
) -> None:
    _loads_or_policy_error(_render(document), environ)


# -- hostile input (issue 12): huge numbers, deep nesting, non-ASCII digits, odd environments --

#: Values as TOML source text, chosen to break parsers and float arithmetic.
HOSTILE_VALUES = st.one_of(
    st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
    st.integers(min_value=1, max_value=400).map(lambda n: f"1e{n}"),
    st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=2000).map(lambda n: "{a = " * n + "1" + "}" * n),
    st.integers(min_value=1, max_value=40).map(lambda n: '"' + "9" * n + 'MB"'),
    st.sampled_from(['"\u0663\u0660m"', '"\uff15\uff11\uff12MB"', '"\u0665\u0660%"',
                     '"1_000"', "1_000", "-0", "+5", "0x10", "inf", "nan", '"1e3s"']),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=False).map(repr).filter(lambda text: "inf" not in text),
)  # fmt: skip
HOSTILE_KEYS = st.sampled_from(
    [f"memory.{key}" for key in MEMORY_FIELDS]
    + [f"defaults.{key}" for key in STORE_FIELDS if key != "size"]
    + [f"stores.diagram.{key}" for key in STORE_FIELDS if key != "size"]
)
HOSTILE_ENVIRONS = st.dictionaries(
    st.sampled_from(["MEMGUARD_MEMORY_LIMIT", "MEMGUARD_CHECK_INTERVAL",
                     "JOB_RETENTION_MINUTES", "MAX_JOBS_PER_STORE"]),
    HOSTILE_VALUES.map(lambda text: text.strip('"')).filter(lambda text: "\x00" not in text),
)  # fmt: skip


def _hostile_document(entries: list[tuple[str, str]]) -> str:
    """`[section]` tables holding each `key = value`, one entry per key."""
    sections: dict[str, dict[str, str]] = {}
    for dotted, value in entries:
        section, _, key = dotted.rpartition(".")
        sections.setdefault(section, {})[key] = value
    return "\n".join(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
                     for section, keys in sections.items())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(HOSTILE_KEYS, HOSTILE_VALUES), max_size=4), HOSTILE_ENVIRONS)
def test_hostile_documents_and_environments_load_or_are_one_policy_error(
    entries: list[tuple[str, str]], environ: dict[str, str]
) -> None:
    text = _hostile_document(entries)
    try:
        policy = Policy.from_toml(text, "fuzz.toml", environ=environ)
    except PolicyError as error:
        assert error.source in ("fuzz.toml", "environment")
        assert len(str(error).splitlines()) == 1 and len(str(error)) < 2000
        return
    # Nothing accepted at load fails at use: every number is within float arithmetic.
    for name in ("diagram", "other"):
        store = policy.store_policy(name)
        for value in (store.max_age, store.max_idle, store.max_jobs, store.max_bytes):
            assert value is None or float(value) < 2**64
    thresholds = policy.memory.resolve(512 * 1024**2)
    for value in attrs_values(thresholds):
        assert value is None or float(value) < 2**64
    assert float(policy.memory.check_interval) < 2**64
    policy.explain_memory()


def attrs_values(instance: Any) -> list[Any]:
    import attrs

    return list(attrs.asdict(instance).values())
