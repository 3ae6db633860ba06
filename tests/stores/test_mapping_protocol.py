"""Decoration never changes what a mapping does (DESIGN section 3).

CPython's own mapping-protocol tests (`Lib/test/mapping_tests.py`) run against each kind of
store class memguard manages, decorated and undecorated, and must give the same results, test
by test: a failure that the undecorated class also has (CPython's tests expect some things a
user's class may not do) is no difference; one the decoration causes is.
"""

from __future__ import annotations

import collections
import unittest
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest

from memguard import MemoryManager, Policy, managed_store
from memguard.testing import FakeClock

mapping_tests = pytest.importorskip("test.mapping_tests")


class PlainMapping(MutableMapping[Any, Any]):
    """A user's MutableMapping: a dict inside."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._data: dict[Any, Any] = {}
        self.update(*args, **kwargs)

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._data[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def bases() -> dict[str, tuple[type, type]]:
    """Store base -> the CPython test case that fits it."""
    return {
        "dict": (type("DictJobs", (dict,), {}), mapping_tests.TestHashMappingProtocol),
        "UserDict": (type("UserDictJobs", (collections.UserDict,), {}),
                     mapping_tests.TestHashMappingProtocol),
        "OrderedDict": (type("OrderedJobs", (collections.OrderedDict,), {}),
                        mapping_tests.TestHashMappingProtocol),
        "MutableMapping": (PlainMapping, mapping_tests.TestMappingProtocol),
    }


def outcomes(store_class: type, case: type) -> dict[str, str]:
    """Run `case` against `store_class`; test name -> "ok", "failure" or "error"."""
    test_case = type(f"Run{store_class.__name__}", (case,), {"type2test": store_class})
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(test_case)
    found = {test.id().rsplit(".", 1)[1]: "ok" for test in suite}  # type: ignore[attr-defined]
    result = unittest.TestResult()
    suite.run(result)
    for test, _ in result.failures:
        found[test.id().rsplit(".", 1)[1]] = "failure"
    for test, _ in result.errors:
        found[test.id().rsplit(".", 1)[1]] = "error"
    return found


@pytest.mark.parametrize("kind", sorted(bases()))
def test_decoration_changes_no_result_of_the_cpython_mapping_tests(kind: str) -> None:
    base, case = bases()[kind]
    manager = MemoryManager(Policy(), clock=FakeClock(0.0))
    managed = managed_store(name=f"fidelity_{kind.lower()}", manager=manager)(
        type(base.__name__, (base,), {}))
    plain = outcomes(type(base.__name__, (base,), {}), case)
    decorated = outcomes(managed, case)
    assert len(plain) >= 15  # the suite really ran
    differences = {name: (plain[name], decorated.get(name)) for name in plain
                   if decorated.get(name) != plain[name]}
    assert differences == {}, f"{kind}: undecorated vs decorated: {differences}"
