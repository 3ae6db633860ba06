"""How a Redis store's job fields travel: encoded for the scripts, decoded from replies.

`JobFields` wraps the store's codec so that every failure names the store, the job, the
field and the Redis key; it also says, for a write script, what decides whether the job is
active (the policy's field and statuses, compared inside Redis, or a callable's answer
computed here). The reply helpers turn the scripts' flat replies into text and victims.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional, Union

from memguard.errors import RedisStoreError
from memguard.policy.options import ActiveWhen
from memguard.redis._codec import Codec, UnreadableValue
from memguard.redis._scripts import GEN_FIELD, RELEASED_MARK
from memguard.redis.checks import check_field

#: Stands, in a job's local snapshot, for a release field whose value stays in Redis until read.
IN_RELEASE: Any = type("InRelease", (), {"__repr__": lambda self: "<in release>"})()

#: An eviction as a script reports it: job id, stored bytes, cause name.
Victim = tuple[str, int, str]

_Raw = Union[bytes, str]


def text(value: _Raw) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def raw(value: _Raw) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def victims(reply: Sequence[_Raw]) -> list[Victim]:
    return [(text(reply[i]), int(float(reply[i + 1])), text(reply[i + 2]))
            for i in range(0, len(reply), 3)]


class JobFields:
    """Encoding and decoding of the fields of store `name`, whose keys start with `base`."""

    def __init__(self, codec: Codec, *, name: str, base: str) -> None:
        self.codec = codec
        self.name = name
        self.base = base
        self._active_cache: tuple[Any, list[Any]] = (None, [])

    def dumps(self, job_id: str, field: str, value: Any) -> bytes:
        try:
            return self.codec.dumps(value)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"store {self.name!r}, job {job_id!r}, field {field!r}: cannot store "
                f"{type(value).__name__} with serializer {self.codec.name!r} ({error})"
                + ("; store lists, dicts with string keys and JSON scalars, or use "
                   "serializer='pickle'"
                   if self.codec.name == "json" else "")) from None

    def split(self, job_id: str, job: Mapping[str, Any],
              release: Sequence[str]) -> tuple[list[Any], list[Any]]:
        """A whole job as the `put` script takes it: (small fields, each a name and its
        bytes, release fields marked; release fields with their bytes), flat."""
        small: list[Any] = []
        released: list[Any] = []
        for field, value in job.items():
            check_field(job_id, field)
            data = self.dumps(job_id, field, value)
            if field in release:
                small.extend((field, RELEASED_MARK))
                released.extend((field, data))
            else:
                small.extend((field, data))
        return small, released

    def decode(self, flat: Sequence[_Raw], job_id: str) -> dict[str, Any]:
        """A job's fields from HGETALL's flat reply; its generation, if any, under
        GEN_FIELD (as text: `RedisJob` takes it out). A value the codec cannot read raises
        RedisStoreError naming the job, the field and the Redis key."""
        fields: dict[str, Any] = {}
        loads = self.codec.loads
        for i in range(0, len(flat), 2):
            name, value = text(flat[i]), raw(flat[i + 1])
            if value == RELEASED_MARK:
                fields[name] = IN_RELEASE
            elif name == GEN_FIELD:
                fields[name] = text(value)
            else:
                try:
                    fields[name] = loads(value)
                except UnreadableValue as error:
                    raise self.unreadable(job_id, name, error) from None
        return fields

    def load(self, job_id: str, field: str, value: _Raw) -> Any:
        """One stored value (a release field's), decoded."""
        try:
            return self.codec.loads(raw(value))
        except UnreadableValue as error:
            raise self.unreadable(job_id, field, error) from None

    def unreadable(self, job_id: str, field: str, error: Exception) -> RedisStoreError:
        return RedisStoreError(
            f"store {self.name!r}: job {job_id!r} (keys {self.base}j:{job_id} / "
            f"{self.base}r:{job_id}) cannot be read: field {field!r} with serializer "
            f"{self.codec.name!r}: {error}")

    def active_args(self, active: Callable[[Any], bool],
                    job: Optional[Mapping[str, Any]]) -> list[Any]:
        """What decides activeness, for a script: the policy's field and its statuses, to be
        compared inside Redis; or a callable's answer on `job`, computed here by the writer
        (None: this write cannot change it)."""
        if isinstance(active, ActiveWhen):
            cached_for, args = self._active_cache
            if cached_for is not active:
                values = sorted(active.values)
                args = ["f", active.field, len(values), *map(self.codec.dumps, values)]
                self._active_cache = (active, args)
            return args
        if job is None:
            return ["-", "", 0]
        try:
            yes = bool(active(job))
        except Exception:  # as in-process stores: a failing predicate keeps the job
            yes = True
        return ["a" if yes else "i", "", 0]


def finishes(active: Callable[[Any], bool], items: Sequence[tuple[str, Any]],
             job: Optional[Mapping[str, Any]]) -> bool:
    """Whether writing `items` leaves the job inactive by `active` (its field written with
    a status not in its values; a callable false on `job`)."""
    if isinstance(active, ActiveWhen):
        return any(field == active.field and not active({field: value})
                   for field, value in items)
    try:
        return job is not None and not active(job)
    except Exception:
        return False
