"""Option fields built by `memguard.policy.options.option`; the one home of max_idle <= max_age."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.errors import PolicyError
from memguard.policy.options import MemoryPolicy, StorePolicy
from memguard.policy.policy import Policy

#: Every field read through `option`, as (class, field name).
OPTION_FIELDS = [
    (cls, field.name)
    for cls in (StorePolicy, MemoryPolicy, Policy)
    for field in attrs.fields(cls)
    if isinstance(field.converter, attrs.Converter)
]


def test_every_store_and_memory_field_is_an_option() -> None:
    named = {(cls, name) for cls, name in OPTION_FIELDS}
    for cls in (StorePolicy, MemoryPolicy):
        assert {(cls, field.name) for field in attrs.fields(cls)} <= named
    assert (Policy, "rules") in named


@pytest.mark.parametrize(
    ("cls", "name"), OPTION_FIELDS, ids=[f"{cls.__name__}.{name}" for cls, name in OPTION_FIELDS]
)
def test_a_bad_value_is_a_value_error_naming_its_own_field(cls: type, name: str) -> None:
    bad: Any = object()  # no reader takes an arbitrary object
    with pytest.raises(ValueError) as caught:
        cls(**{name: bad})
    message = str(caught.value)
    assert message.startswith(f"{name}: ")
    assert "expected" in message
    assert "object object at" in message  # the bad value is shown


def test_optional_fields_keep_none_and_the_others_read_it() -> None:
    assert StorePolicy(max_age=None, max_bytes=None, size=None).max_age is None
    assert MemoryPolicy(limit="1GB", warning_heap=None).warning_heap is None
    assert MemoryPolicy(limit=None, warning="400MB", emergency="450MB", emergency_target="420MB",
                        critical="500MB").limit is None  # _limit reads None itself
    with pytest.raises(ValueError, match=r"^check_interval: expected a duration"):
        MemoryPolicy(check_interval=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^order: expected an eviction order"):
        StorePolicy(order=None)  # type: ignore[arg-type]


SECONDS = st.integers(min_value=1, max_value=10 * 24 * 3600)


@given(age=SECONDS, idle=SECONDS)
def test_max_idle_above_max_age_is_one_rule_for_python_and_toml(age: int, idle: int) -> None:
    """The decorator/Python path and the TOML path refuse exactly the same pairs, and the
    file's error carries the same sentence, placed at the file, line and key of max_idle."""
    text = f"[stores.iac]\nmax_age = {age}\nmax_idle = {idle}\n"
    if idle <= age:
        assert StorePolicy(max_age=age, max_idle=idle).max_idle == idle
        assert Policy.from_toml(text, "p.toml", environ={}).store_policy("iac").max_idle == idle
        return
    with pytest.raises(ValueError) as python:
        StorePolicy(max_age=age, max_idle=idle)
    with pytest.raises(PolicyError) as toml:
        Policy.from_toml(text, "p.toml", environ={})
    assert str(python.value).startswith("max_idle: ")
    assert "must not exceed max_age" in str(python.value)
    assert str(toml.value) == f"p.toml:3: stores.iac.max_idle: got {idle}; {python.value}"
    assert (toml.value.line, toml.value.key) == (3, "stores.iac.max_idle")


@given(age=SECONDS, idle=SECONDS)
def test_a_max_age_set_above_an_inherited_max_idle_caps_it(age: int, idle: int) -> None:
    policy = Policy.from_toml(
        f"[defaults]\nmax_idle = {idle}\n[stores.iac]\nmax_age = {age}\n", "p.toml", environ={}
    )
    store = policy.store_policy("iac")
    assert store.max_idle == min(age, idle)
    assert policy.explain("iac")["max_idle"][1] == (
        "p.toml:4 (max_age caps max_idle)" if idle > age else "p.toml:2"
    )
