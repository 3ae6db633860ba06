"""The default size estimate: the flat-dict shortcut agrees with the full walk."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard import MemoryManager, handle, managed_store
from memguard.index.estimate import MAX_DEPTH, MAX_OBJECTS, SAMPLE, _Walk, estimate_size

atoms = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                  st.text(max_size=600), st.binary(max_size=600))


def walked(job: Any) -> int:
    """The full walk's figure, without the shortcut."""
    return int(_Walk(MAX_DEPTH, MAX_OBJECTS, SAMPLE).size(job, 0))


@given(st.dictionaries(st.text(max_size=20), atoms, max_size=SAMPLE))
def test_a_flat_dict_of_distinct_atoms_measures_as_the_walk_does(job: dict[str, Any]) -> None:
    objects = [*job, *job.values()]
    repeated = len({id(obj) for obj in objects}) < len(objects)
    estimate = estimate_size(job)
    if repeated:  # a small atom met twice is counted twice by the shortcut only
        assert walked(job) <= estimate <= walked(job) + sum(map(sys.getsizeof, objects))
    else:
        assert estimate == walked(job)


def test_a_big_value_stored_under_two_keys_is_counted_once() -> None:
    result = "x" * 100_000
    assert estimate_size({"result": result, "copy": result}) == walked(
        {"result": result, "copy": result}) < 2 * 100_000


def test_nested_or_large_dicts_take_the_walk() -> None:
    nested = {"status": "done", "result": {"rows": [{"a": i} for i in range(100)]}}
    assert estimate_size(nested) == walked(nested)
    wide = {f"k{i}": i for i in range(SAMPLE + 1)}
    assert estimate_size(wide) == walked(wide)


class CountingList(list):  # type: ignore[type-arg]
    """A container that counts how many of its items were taken."""

    taken = 0

    def __iter__(self) -> Iterator[Any]:
        for item in super().__iter__():
            CountingList.taken += 1
            yield item


def test_the_size_estimate_walks_no_container_whole() -> None:
    CountingList.taken = 0
    big = CountingList(range(2_000_000))
    estimate_size({"result": big})
    assert CountingList.taken <= MAX_OBJECTS + 1
    CountingList.taken = 0
    shared = CountingList(range(1000))  # the same big child under many parents
    estimate_size([[shared] * 1000 for _ in range(1000)])
    assert CountingList.taken <= MAX_OBJECTS + 1


def test_a_negative_size_counts_zero_with_a_warning(
        manager: MemoryManager, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="memguard")
    sizes: Callable[[Any], int] = lambda job: job["size"]  # noqa: E731

    @managed_store(manager=manager, size=sizes, max_bytes=100)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    store["neg"] = {"status": "done", "size": -10_000}
    store["a"] = {"status": "done", "size": 60}
    store["b"] = {"status": "done", "size": 60}  # over 100: a negative size cannot hide it
    assert handle(store).index.total_bytes == 60
    assert "cannot be negative" in caplog.text
    assert "b" in store and "a" not in store
