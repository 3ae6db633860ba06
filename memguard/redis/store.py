"""`RedisStore`: a job store whose jobs live in Redis, shared by every worker and dyno.

Under `@managed_store` it is governed like an in-process store (same options, same TOML
policy, same handle surface); the rules are enforced by Lua scripts inside Redis, so they
hold across processes. Without the decorator it is a plain shared mapping, unbounded.
"""

from __future__ import annotations

import os
from collections.abc import ItemsView, Iterator, Mapping, MutableMapping, ValuesView
from typing import TYPE_CHECKING, Any, ClassVar, Optional, cast

from memguard.errors import RedisConfigError, StoreDefinitionError
from memguard.redis._codec import codec
from memguard.redis._core import RedisCore
from memguard.redis.job import RedisJob
from memguard.stores.managed import snake_case

if TYPE_CHECKING:
    from memguard.redis.handle import RedisHandle
    from memguard.stores.building import _Spec

#: Client timeouts (seconds) of a store built from a URL: a Redis that does not answer fails
#: the operation instead of hanging a request (pass `client=` to choose your own).
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0

_MISSING: Any = object()


def _where(client: Any) -> str:
    """host:port/db of a redis-py client (no password), for error messages; a cluster's
    nodes as `cluster host:port,...`."""
    nodes = getattr(client, "get_nodes", None)
    if nodes is not None:
        try:
            return "cluster " + ",".join(sorted(node.name for node in nodes()))
        except Exception:  # a client that only looks like a cluster client
            return repr(client)
    try:
        kwargs = client.connection_pool.connection_kwargs
    except AttributeError:
        return repr(client)
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def _client_for(url: Optional[str], spec: Optional[_Spec]) -> Any:
    """A client for `url`, else the policy's `[redis] url`, else `REDIS_URL`."""
    import redis

    if url is None:
        from memguard.stores.building import _manager_of

        policy = _manager_of(spec).policy if spec is not None else _default_policy()
        url = policy.redis.get("url") or os.environ.get("REDIS_URL")
    if not url:
        raise RedisConfigError(
            "RedisStore needs a Redis: pass url='redis://host:port/db', set url in the "
            "policy's [redis] section or REDIS_URL, or pass client= (any redis-py compatible "
            "client)")
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # One immediate retry, on a connection error only: it replaces a pooled connection that
    # a Redis restart closed. No retry on a timeout (the command may have run; a script
    # such as pop is not idempotent) and no backoff: a Redis that is away fails the
    # operation at once instead of holding the request for seconds.
    retry = Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
    try:
        return redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT,
                                    socket_connect_timeout=CONNECT_TIMEOUT,
                                    health_check_interval=30, retry=retry)
    except ValueError as error:
        raise RedisConfigError(f"RedisStore url={url!r}: {error}") from None


def _default_policy() -> Any:
    from memguard.manager import manager

    return manager.policy


class RedisStore(MutableMapping[str, Mapping[str, Any]]):
    """A mapping of job id -> job (a mapping of field -> value) kept in Redis.

    `store[id]` and `store.get(id)` return a live `RedisJob` (a dict whose item writes go
    to Redis at once) and count as a use of the job; `in`, `len`, iteration, `keys()`,
    `values()` and `items()` do not. `pop` and `popitem` return a plain dict.
    """

    _memguard_spec: ClassVar[Optional[_Spec]] = None
    _memguard: Optional[RedisHandle]

    def __init__(self, url: Optional[str] = None, *, client: Any = None,
                 prefix: str = "memguard", serializer: str = "json",
                 pickle_key: Optional[bytes] = None, unsafe_pickle: bool = False,
                 allow_redis_eviction: bool = False) -> None:
        try:
            chosen = codec(serializer, pickle_key=pickle_key, unsafe_pickle=unsafe_pickle)
        except ValueError as error:
            raise RedisConfigError(f"RedisStore {error}") from None
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise RedisConfigError(f"RedisStore prefix: expected a non-empty string without "
                                   f"braces; got {prefix!r}")
        spec = type(self)._memguard_spec
        if client is None:
            client = _client_for(url, spec)
        elif url is not None:
            raise RedisConfigError("RedisStore: pass url= or client=, not both")
        kwargs: Any = getattr(client, "get_connection_kwargs", dict)()
        decoding = kwargs.get("decode_responses")
        if decoding and chosen.name == "pickle":
            raise RedisConfigError("RedisStore serializer='pickle' needs a client with "
                                   "decode_responses=False (pickles are bytes)")
        name = spec.name if spec is not None else snake_case(type(self).__name__)
        try:
            self._core = RedisCore(client, name=name, prefix=prefix, codec=chosen,
                                   where=_where(client),
                                   allow_eviction=allow_redis_eviction is True)
        except ValueError as error:
            raise RedisConfigError(f"RedisStore: {error}") from None
        if not isinstance(allow_redis_eviction, bool):
            raise RedisConfigError(f"RedisStore allow_redis_eviction: expected True or False; "
                                   f"got {allow_redis_eviction!r}")
        self._core.link.connect()
        self._memguard = None
        if spec is not None:
            from memguard.redis.handle import RedisHandle

            self._memguard = RedisHandle.create(spec, self._core)
            self._memguard.manager.register(self._memguard, self)

    @classmethod
    def __memguard_manage__(cls, spec: _Spec) -> type:
        """`@managed_store` on a RedisStore class: a subclass whose instances are governed."""
        if "size" in spec.declared:
            raise StoreDefinitionError(
                f"@managed_store on {cls.__qualname__}: size= does not apply to a Redis "
                "store, which weighs each job by its stored (serialized) size")
        managed = type(cls.__name__, (cls,), {"_memguard_spec": spec})
        for attribute in ("__module__", "__qualname__", "__doc__"):
            setattr(managed, attribute, getattr(cls, attribute))
        managed.__wrapped__ = cls  # type: ignore[attr-defined]
        return managed

    def __memguard_adopt__(self, manager: Any, name: str, declared: Mapping[str, Any]) -> Any:
        """`manager.setup_job_store_cleanup(store, name)` on an undecorated RedisStore: refused.

        Adopting it as a plain mapping would govern it from one process's own index (bounds
        checked only at that worker's passes, every job read at each pass, workers evicting
        by different views), and its keys carry the class's hash tag, not `name`, so a
        worker that declares the store properly would not even see the same jobs.
        """
        cls = type(self)
        options = "".join(f", {key}={value!r}" for key, value in declared.items())
        raise StoreDefinitionError(
            f"setup_job_store_cleanup({cls.__qualname__} instance, {name!r}): a RedisStore "
            f"is governed by its class, inside Redis, for every worker at once; declare it "
            f"with @managed_store(name={name!r}{options}) on class {cls.__qualname__}"
            f"(RedisStore) instead (its jobs are kept under the store name's keys)")

    def __repr__(self) -> str:
        return (f"<{type(self).__qualname__} {self._core.name!r} at {self._core.link.where} "
                f"prefix={self._core.base!r}>")

    @property
    def client(self) -> Any:
        """The redis-py compatible client this store talks through."""
        return self._core.link.client

    # -- the mapping protocol -------------------------------------------------------------

    @staticmethod
    def _check_key(key: object) -> str:
        if not isinstance(key, str):
            raise TypeError(f"job ids of a Redis store are strings; got {key!r}")
        return key

    def __getitem__(self, key: str) -> RedisJob:
        fields = self._core.get(key, touch=True) if isinstance(key, str) else None
        if fields is None:
            raise KeyError(key)
        return RedisJob(self._core, key, fields)

    def get(self, key: str, default: Any = None) -> Any:
        """The live job at `key` (a use of it), or `default`; ids are strings, so any other
        key is simply not there, as in a dict of string keys."""
        fields = self._core.get(key, touch=True) if isinstance(key, str) else None
        return default if fields is None else RedisJob(self._core, key, fields)

    def peek(self, key: str, default: Any = None) -> Any:
        """The job as `get` gives it, without counting as a use (no recency update)."""
        fields = self._core.get(key, touch=False) if isinstance(key, str) else None
        return default if fields is None else RedisJob(self._core, key, fields)

    def __setitem__(self, key: str, value: Mapping[str, Any]) -> None:
        gen = self._core.put(self._check_key(key), _job_fields(key, value))
        if isinstance(value, RedisJob) and value._core is self._core and value._id == key:
            value._gen = gen or ""  # stored back under its own id: it stays live

    def __delitem__(self, key: str) -> None:
        if not isinstance(key, str) or self._core.delete(key) is None:
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._core.contains(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._core.ids())

    def __len__(self) -> int:
        return self._core.count()

    def values(self) -> ValuesView[Mapping[str, Any]]:
        return _QuietValues(self)

    def items(self) -> ItemsView[str, Mapping[str, Any]]:
        return _QuietItems(self)

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        job = self._core.take(key) if isinstance(key, str) else None
        if job is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return job

    def popitem(self) -> tuple[str, Any]:
        """Remove and return the newest job (LIFO, as dict does), as a plain dict."""
        while True:
            key = self._core.newest()
            if key is None:
                raise KeyError("popitem(): store is empty")
            job = self._core.take(key)
            if job is not None:  # else another worker took it meanwhile: the next one
                return key, job

    def setdefault(self, key: str, default: Any = None) -> Any:
        """The job at `key`, or store `default` there atomically (one worker wins)."""
        fields = _job_fields(key, {} if default is None else default)
        while True:
            if self._core.put(self._check_key(key), fields, nx=True) is not None:
                return self.peek(key, default)
            found = self.get(key, _MISSING)
            if found is not _MISSING:
                return found

    def clear(self) -> None:
        self._core.clear()

    def _batches(self, size: int = 100) -> Iterator[tuple[str, RedisJob]]:
        """Every readable job, `size` per round trip; a job that cannot be read (corrupt, or
        a pickle signed with another key) is skipped with a warning naming its key: one bad
        job never hides the others (`store[id]` on it raises the error)."""
        ids = self._core.ids()
        for start in range(0, len(ids), size):
            for key, fields in self._core.get_many(ids[start:start + size], skip_unreadable=True):
                yield key, RedisJob(self._core, key, fields)


def _job_fields(key: str, value: object) -> Mapping[str, Any]:
    if isinstance(value, RedisJob):
        return value.copy()
    if not isinstance(value, Mapping):
        raise TypeError(f"job {key!r}: a Redis store keeps jobs that are mappings of field -> "
                        f"value; got {type(value).__name__}")
    return value


class _QuietValues(ValuesView[Mapping[str, Any]]):
    """`values()`: reads every job without counting as a use, 100 per round trip."""

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        for _key, job in cast(RedisStore, cast(Any, self)._mapping)._batches():
            yield job


class _QuietItems(ItemsView[str, Mapping[str, Any]]):
    """`items()`: reads every job without counting as a use, 100 per round trip."""

    def __iter__(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        yield from cast(RedisStore, cast(Any, self)._mapping)._batches()
