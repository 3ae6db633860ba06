"""How a field value becomes bytes in Redis and back: JSON by default, pickle opt-in.

JSON refuses, at write, a value it would not give back equal (a tuple comes back a list, a
non-string key a string), so a store never changes a job silently. Pickle is signed by
default (HMAC-SHA256 with a key the app provides): unpickling runs code, so a store only
unpickles what a holder of the key wrote. Unsigned pickle needs `unsafe_pickle=True`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from typing import Any, Callable, Optional

import attrs

#: Bytes of the HMAC-SHA256 signature in front of a signed pickle.
SIGNATURE_BYTES = 32


class UnreadableValue(ValueError):
    """A stored value this codec cannot read (corrupt, foreign, or signed with another key)."""


@attrs.frozen
class Codec:
    """A named pair of functions; `dumps` must give equal bytes for equal strings, since the
    active check compares stored status bytes inside Redis."""

    name: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


def _json_dumps(value: Any) -> bytes:
    data = json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")
    if isinstance(value, (dict, list, tuple)) and json.loads(data) != value:
        raise ValueError(f"JSON would not give this value back ({_json_change(value)})")
    return data


def _json_change(value: Any) -> str:
    """What JSON changes in `value` (the first thing found), for the error message."""
    if isinstance(value, tuple):
        return "a tuple comes back as a list"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"the non-string key {key!r} comes back as a string"
            found = _json_change(item)
            if found:
                return found
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _json_change(item)
            if found:
                return found
    return ""


def _json_loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise UnreadableValue(f"not JSON: {error}") from None


def _pickle_dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _pickle_loads(data: bytes) -> Any:
    try:
        return pickle.loads(data)
    except Exception as error:
        raise UnreadableValue(f"not a pickle: {type(error).__name__}: {error}") from None


def _signed(key: bytes) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    def dumps(value: Any) -> bytes:
        data = _pickle_dumps(value)
        return hmac.new(key, data, hashlib.sha256).digest() + data

    def loads(stored: bytes) -> Any:
        signature, data = stored[:SIGNATURE_BYTES], stored[SIGNATURE_BYTES:]
        if not hmac.compare_digest(signature, hmac.new(key, data, hashlib.sha256).digest()):
            raise UnreadableValue("its pickle signature does not match this store's "
                                  "pickle_key (written with another key, or by someone "
                                  "without it): not unpickled")
        return _pickle_loads(data)

    return dumps, loads


JSON = Codec("json", _json_dumps, _json_loads)
SERIALIZERS = ("json", "pickle")


def codec(name: object, *, pickle_key: Optional[bytes] = None,
          unsafe_pickle: bool = False) -> Codec:
    """The codec called `name`; a ValueError naming the choices, or what pickle needs."""
    if name == "json":
        if pickle_key is not None or unsafe_pickle:
            raise ValueError("pickle_key and unsafe_pickle apply to serializer='pickle' only")
        return JSON
    if name != "pickle":
        raise ValueError(f"serializer: expected one of {', '.join(map(repr, SERIALIZERS))}; "
                         f"got {name!r}")
    if pickle_key is not None:
        if isinstance(pickle_key, str):
            pickle_key = pickle_key.encode("utf-8")
        if not isinstance(pickle_key, bytes) or len(pickle_key) < 16:
            shown = (f"{len(pickle_key)} bytes" if isinstance(pickle_key, bytes)
                     else type(pickle_key).__name__)
            raise ValueError("pickle_key: expected a secret of at least 16 bytes or "
                             f"characters (the HMAC key that signs every pickle); got {shown}")
        dumps, loads = _signed(pickle_key)
        return Codec("pickle", dumps, loads)
    if unsafe_pickle is True:
        return Codec("pickle", _pickle_dumps, _pickle_loads)
    raise ValueError(
        "serializer='pickle' needs pickle_key=SECRET (HMAC-signed pickles: only a holder of "
        "the key can write what the workers unpickle), or unsafe_pickle=True to accept "
        "that whoever can write to this Redis can run code in every worker")
