"""How a field value becomes bytes in Redis and back: JSON by default, pickle opt-in."""

from __future__ import annotations

import json
import pickle
from typing import Any, Callable

import attrs


@attrs.frozen
class Codec:
    """A named pair of functions; `dumps` must give equal bytes for equal strings, since the
    active check compares stored status bytes inside Redis."""

    name: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


def _json_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _pickle_dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


CODECS = {
    "json": Codec("json", _json_dumps, json.loads),
    "pickle": Codec("pickle", _pickle_dumps, pickle.loads),
}


def codec(name: object) -> Codec:
    """The codec called `name`; a ValueError naming the choices otherwise."""
    found = CODECS.get(name) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"serializer: expected one of {', '.join(map(repr, CODECS))}; "
                         f"got {name!r}")
    return found
