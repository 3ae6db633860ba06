"""The default size estimate: the flat-dict shortcut agrees with the full walk."""

from __future__ import annotations

import sys
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

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
