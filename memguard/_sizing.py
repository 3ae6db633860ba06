"""The default size estimate of a job: a bounded, sampled deep `sys.getsizeof` walk.

Exact deep sizes cost time proportional to the object graph, and a job's result can be a
parsed-JSON tree of a million small objects. So the walk measures at most `SAMPLE` children
of any container (the first ones, or evenly spaced ones for lists and tuples) and scales their
total up to the container's length; it stops at `MAX_DEPTH` and after `MAX_OBJECTS` visits,
after which unvisited children count as the average of their measured siblings. A list of
10,000 similar dicts costs a few hundred visits and comes out within a few percent; the cost
of one estimate is bounded whatever the job holds. Containers met twice (cycles, shared
branches) are counted once.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

MAX_DEPTH = 6
MAX_OBJECTS = 20_000
SAMPLE = 32

_ATOMS = (str, bytes, bytearray, int, float, bool, complex, type(None), memoryview)
_ATOM_TYPES = frozenset(_ATOMS)
_SEQUENCES = (list, tuple)


def estimate_size(job: Any, *, max_depth: int = MAX_DEPTH, max_objects: int = MAX_OBJECTS,
                  sample: int = SAMPLE) -> int:
    """Approximate bytes held by `job` and what it references (see the module docstring)."""
    walk = _Walk(max_depth, max_objects, sample)
    return int(walk.size(job, 0))


class _Walk:
    """One estimate: the bounds and what has been visited so far."""

    __slots__ = ("left", "max_depth", "sample", "seen")

    def __init__(self, max_depth: int, max_objects: int, sample: int) -> None:
        self.max_depth = max_depth
        self.left = max_objects
        self.sample = max(1, sample)
        self.seen: set[int] = set()

    def size(self, obj: Any, depth: int) -> float:
        if id(obj) in self.seen:  # shared: json.loads shares the keys of every row
            return 0
        self.seen.add(id(obj))
        self.left -= 1
        own = sys.getsizeof(obj, 0)
        kind = type(obj)
        if kind in _ATOM_TYPES or depth >= self.max_depth:
            return own
        if kind is dict or isinstance(obj, Mapping):
            return own + self.children(obj.items(), len(obj), depth, pairs=True)
        if kind in _SEQUENCES or isinstance(obj, _SEQUENCES):
            return own + self.children(_spaced(obj, self.sample), len(obj), depth)
        if isinstance(obj, (set, frozenset, deque)):
            return own + self.children(obj, len(obj), depth)
        if isinstance(obj, _ATOMS):
            return own
        return own + self.children(_fields(obj), None, depth)

    def children(self, items: Iterable[Any], count: int | None, depth: int, *,
                 pairs: bool = False) -> float:
        """The size of `count` children from a sample of `items` (pairs: key, value)."""
        total = 0.0
        measured = 0
        for item in islice(items, self.sample):
            if self.left <= 0:
                break
            if pairs:
                total += self.size(item[0], depth + 1) + self.size(item[1], depth + 1)
            else:
                total += self.size(item, depth + 1)
            measured += 1
        if count is None or measured == 0 or measured >= count:
            return total
        return total * count / measured


def _spaced(sequence: Any, wanted: int) -> Iterator[Any]:
    """Up to `wanted` items spread evenly over a list or tuple."""
    length = len(sequence)
    if length <= wanted:
        return iter(sequence)
    return (sequence[i * length // wanted] for i in range(wanted))


def _fields(obj: Any) -> list[Any]:
    attributes = getattr(obj, "__dict__", None)
    if isinstance(attributes, dict):
        return [attributes]
    slots = getattr(type(obj), "__slots__", ())
    if isinstance(slots, str):
        slots = (slots,)
    return [getattr(obj, name) for name in slots if hasattr(obj, name)]
