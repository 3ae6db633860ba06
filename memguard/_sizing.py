"""The default size estimate of a job: a bounded deep `sys.getsizeof` walk.

Exact deep sizes cost time proportional to the object graph; a job's big parts are almost
always a few long strings or a parsed-JSON tree near the top, so the walk stops at a fixed
depth and a fixed number of objects. Shared objects are counted once per estimate. Time is
bounded too: no container is walked past what the walk may still visit (a set of millions
is never copied whole), and the children queued in all, shared ones included, are capped.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

MAX_DEPTH = 6
MAX_OBJECTS = 20_000

_ATOMS = (str, bytes, bytearray, int, float, bool, complex, type(None), memoryview)
_ATOM_TYPES = frozenset(_ATOMS)


def estimate_size(job: Any, *, max_depth: int = MAX_DEPTH, max_objects: int = MAX_OBJECTS) -> int:
    """Approximate bytes held by `job` and what it references, within the walk's bounds."""
    getsizeof = sys.getsizeof
    seen: set[int] = set()
    total = 0
    stack: list[tuple[Any, int]] = [(job, 0)]
    push = stack.append
    queued = 0  # children queued so far: shared children are queued again and again
    max_queued = 4 * max_objects
    while stack and len(seen) < max_objects:
        obj, depth = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += getsizeof(obj, 0)
        kind = type(obj)
        if kind in _ATOM_TYPES or depth >= max_depth:
            continue
        depth += 1
        # never queue more than the walk may still visit, nor past the queueing budget
        room = min(max_objects - len(seen), max_queued - queued)
        if room <= 0:
            continue
        before = len(stack)
        if kind is dict:  # the common shapes first, without ABC checks
            for key, value in islice(obj.items(), room):
                push((key, depth))
                push((value, depth))
        elif kind is list or kind is tuple:
            for item in islice(obj, room):
                push((item, depth))
        elif not isinstance(obj, _ATOMS):
            for child in islice(_children(obj), room):
                push((child, depth))
        queued += len(stack) - before
    return total


def _children(obj: Any) -> Iterator[Any]:
    """The objects `obj` references, lazily: the caller takes only as many as it may visit."""
    if isinstance(obj, Mapping):
        return (part for item in obj.items() for part in item)
    if isinstance(obj, (list, tuple, set, frozenset, deque)):
        return iter(obj)
    attributes = getattr(obj, "__dict__", None)
    if isinstance(attributes, dict):
        return iter((attributes,))
    slots = getattr(type(obj), "__slots__", ())
    if isinstance(slots, str):
        slots = (slots,)
    return iter([getattr(obj, name) for name in slots if hasattr(obj, name)])
