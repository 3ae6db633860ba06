"""The default size estimate of a job: a bounded, sampled deep `sys.getsizeof` walk.

Exact deep sizes cost time proportional to the object graph, and a job's result can be a
parsed-JSON tree of a million small objects. So the walk measures at most `SAMPLE` children
of any container (the first ones, or evenly spaced ones for lists and tuples) and scales their
total up to the container's length; it stops at `MAX_DEPTH` and after `MAX_OBJECTS` visits,
after which unvisited children count as the average of their measured siblings. A list of
10,000 similar dicts costs a few hundred visits and comes out within a few percent; the cost
of one estimate is bounded whatever the job holds. Containers met twice (cycles, shared
branches) are counted once. The commonest job, a small flat dict of strings and numbers, is
measured in one loop instead (`_flat_dict_size`): the same figure, at a third of the cost.
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
#: Atoms the collector never tracks (so `sys.getsizeof(x)` is `sys.getsizeof(x, 0)`).
_FLAT_TYPES = frozenset((str, bytes, int, float, bool, complex, type(None)))


def estimate_size(job: Any, *, max_depth: int = MAX_DEPTH, max_objects: int = MAX_OBJECTS,
                  sample: int = SAMPLE) -> int:
    """Approximate bytes held by `job` and what it references (see the module docstring)."""
    if type(job) is dict and len(job) <= sample and max_depth >= 1:
        flat = _flat_dict_size(job)
        if flat is not None:
            return flat
    walk = _Walk(max_depth, max_objects, sample)
    return int(walk.size(job, 0))


def _flat_dict_size(job: dict[Any, Any]) -> int | None:
    """The commonest job, a small dict of strings and numbers, measured in one loop (the walk
    costs a Python call per object); None for anything else.

    The walk counts an object met twice once; so does this loop for values of 256 bytes or
    more (a big result stored under two keys). A small atom repeated (two `None` values) is
    counted twice here, a difference of a few dozen bytes at most.
    """
    getsizeof = sys.getsizeof  # one-argument form: none of _FLAT_TYPES is GC-tracked, so
    flat = _FLAT_TYPES  # the figure equals the walk's getsizeof(obj, 0)
    total = getsizeof(job, 0)
    big: set[int] | None = None
    for key, value in job.items():
        if type(key) not in flat or type(value) not in flat:
            return None
        size = getsizeof(value)
        if size >= 256:
            if big is None:
                big = {id(value)}
            elif id(value) in big:
                size = 0
            else:
                big.add(id(value))
        total += getsizeof(key) + size
    return total


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
