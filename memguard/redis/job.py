"""`RedisJob`: a job read from a Redis store, whose item writes go to Redis at once.

It is a `dict` subclass so that code written for a dict store keeps working unchanged:
`isinstance(job, dict)`, `json.dumps(job)`, `flask.jsonify(job)`, `dict(job)`, `{**job}`.
The small fields are a snapshot taken when the job was read; release fields (`result` by
default) stay in Redis and are fetched each time one is read, so reading a job never
transfers them and holding one never keeps a result in the worker. Once the job has been
evicted its release fields read None (as with in-process stores) and writes no longer
reach Redis: an evicted job does not come back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from memguard.redis._fields import IN_RELEASE
from memguard.redis._scripts import GEN_FIELD
from memguard.redis.checks import check_field

if TYPE_CHECKING:
    from memguard.redis._core import RedisCore

_MISSING: Any = object()


class RedisJob(dict):  # type: ignore[type-arg]
    """A live job of a Redis store (a dict whose writes go to Redis)."""

    __slots__ = ("_core", "_gen", "_id", "_stored")

    def __init__(self, core: RedisCore, job_id: str, fields: Mapping[str, Any]) -> None:
        # The dict itself holds the small fields, and None for each release field (what
        # C-level readers that bypass these methods see: a released field).
        super().__init__({k: (None if v is IN_RELEASE else v) for k, v in fields.items()
                          if k != GEN_FIELD})
        self._core = core
        self._id = job_id
        #: The generation of the job read: writes reach that job only, never a job stored
        #: later under the same id ('' for a job stored before generations: unchecked).
        self._gen: str = fields.get(GEN_FIELD, "")
        self._stored = {k for k, v in fields.items() if v is IN_RELEASE}

    @property
    def id(self) -> str:
        """The job id in its store."""
        return self._id

    def __repr__(self) -> str:
        shown = {k: ("<in redis>" if k in self._stored else dict.__getitem__(self, k))
                 for k in dict.keys(self)}
        return f"RedisJob({self._id!r}, {shown!r})"

    # -- reads ---------------------------------------------------------------------------

    def __getitem__(self, field: str) -> Any:
        value = dict.__getitem__(self, field)
        if field in self._stored:
            return self._core.fetch_release(self._id, field)
        return value

    def get(self, field: str, default: Any = None) -> Any:
        if not dict.__contains__(self, field):
            return default
        return self[field]

    def __iter__(self) -> Iterator[str]:  # defined here, so dict(job) reads through []
        return iter(dict.keys(self))

    def values(self) -> list[Any]:  # type: ignore[override]
        return [self[k] for k in dict.keys(self)]

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        return [(k, self[k]) for k in dict.keys(self)]

    def copy(self) -> dict[str, Any]:
        """A plain dict of every field, release fields fetched (None once evicted)."""
        return dict(self.items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self.copy() == dict(other.items())

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None

    def __reduce__(self) -> Any:  # pickling or copying a job gives a plain dict
        return (dict, (self.copy(),))

    def refresh(self) -> RedisJob:
        """Read the small fields again (another worker may have written them); self. A job
        whose id now holds another job (deleted and stored again) is left as it was: read
        `store[id]` for the new one."""
        fields = self._core.get(self._id, touch=False)
        if fields is not None and fields.get(GEN_FIELD, "") == self._gen:
            dict.clear(self)
            dict.update(self, {k: (None if v is IN_RELEASE else v) for k, v in fields.items()
                               if k != GEN_FIELD})
            self._stored = {k for k, v in fields.items() if v is IN_RELEASE}
        return self

    # -- writes: to Redis first, then here -------------------------------------------------

    def _view(self, field: str, value: Any) -> dict[str, Any]:
        """The job as the writer knows it after writing `field` (for a callable `active`;
        release fields not written now read None)."""
        view = dict(dict.items(self))
        view[field] = value
        return view

    def __setitem__(self, field: str, value: Any) -> None:
        check_field(self._id, field)
        self._core.set_fields(self._id, self._gen, ((field, value),), self._view(field, value))
        self._set_local(field, value)

    def _set_local(self, field: str, value: Any) -> None:
        if field in self._core.policy.release:
            self._stored.add(field)
            dict.__setitem__(self, field, None)
        else:
            self._stored.discard(field)
            dict.__setitem__(self, field, value)

    def __delitem__(self, field: str) -> None:
        if not dict.__contains__(self, field):
            raise KeyError(field)
        view = dict(dict.items(self))
        del view[field]
        self._core.del_fields(self._id, self._gen, (field,), view)
        dict.__delitem__(self, field)
        self._stored.discard(field)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Write every field given in one script: no reader sees some of them written and
        not the others (a poll never sees `status == "done"` with `result` still None)."""
        items = dict(*args, **kwargs)
        if not items:
            return
        for field in items:
            check_field(self._id, field)
        view = dict(dict.items(self))
        view.update(items)
        self._core.set_fields(self._id, self._gen, list(items.items()), view)
        for field, value in items.items():
            self._set_local(field, value)

    def setdefault(self, field: str, default: Any = None) -> Any:
        if dict.__contains__(self, field):
            return self[field]
        self[field] = default
        return default

    def pop(self, field: str, default: Any = _MISSING) -> Any:
        if not dict.__contains__(self, field):
            if default is _MISSING:
                raise KeyError(field)
            return default
        value = self[field]
        del self[field]
        return value

    def popitem(self) -> tuple[str, Any]:
        if not dict.__len__(self):
            raise KeyError("popitem(): job has no fields")
        field = next(reversed(dict.keys(self)))
        return field, self.pop(field)

    def clear(self) -> None:
        """Delete every field in one script."""
        fields = list(dict.keys(self))
        if fields:
            self._core.del_fields(self._id, self._gen, fields, {})
            dict.clear(self)
            self._stored.clear()

    def __ior__(self, other: Any) -> RedisJob:  # type: ignore[misc]
        self.update(other)
        return self
