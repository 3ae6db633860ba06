"""The connection of one Redis store: its key layout, its scripts and its operations.

`RedisCore` is what a `RedisStore` and its `RedisHandle` share: the store reads and writes
jobs through it, the handle runs passes, pins and stats through it. It holds the effective
`StorePolicy` and the store's `EvictionPlan` (both set by the handle on every policy
change): the policy decides which fields are released and what makes a job active, the
plan gives the scripts their bounds, ages and orders.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable, Optional, Union

from memguard._logging import logger
from memguard.errors import RedisFull, RedisStoreError, RedisUnavailable
from memguard.eviction.plan import EvictionPlan
from memguard.policy.options import ActiveWhen, StorePolicy
from memguard.redis._codec import Codec, UnreadableValue
from memguard.redis._errors import translated
from memguard.redis._scripts import GEN_FIELD, RELEASED_MARK, Scripts
from memguard.redis.checks import check_field, require_no_eviction, require_redis_7

#: Stands, in a job's local snapshot, for a release field whose value stays in Redis until read.
IN_RELEASE: Any = type("InRelease", (), {"__repr__": lambda self: "<in release>"})()

#: An eviction as a script reports it: job id, stored bytes, cause name.
Victim = tuple[str, int, str]

#: Seconds Redis keeps the copy of a taken (popped) job, for a pop whose reply was lost.
TAKEN_TTL = 600.0

#: Reads (`store[id]`, `get`) are one plain HGETALL; the recency updates they owe are batched
#: (DESIGN section 8 allows it) and sent as one `touch` script once this many are pending,
#: once the oldest is this many seconds old, and before anything that evicts by recency
#: (an insert, a pass, the emergency rule) or lists it.
READS_BATCH = 100
READS_DELAY = 0.5

#: Most victims a pass script evicts per call, so that one call never blocks Redis for long.
PASS_BATCH = 500

_Raw = Union[bytes, str]


def text(value: _Raw) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def raw(value: _Raw) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def victims(reply: Sequence[_Raw]) -> list[Victim]:
    return [(text(reply[i]), int(float(reply[i + 1])), text(reply[i + 2]))
            for i in range(0, len(reply), 3)]


def _writing(items: Sequence[tuple[str, Any]]) -> str:
    return f"write of field(s) {', '.join(repr(field) for field, _value in items)}"


class RedisCore:
    """Keys, scripts and operations of store `name` under `prefix` on `client`."""

    def __init__(self, client: Any, *, name: str, prefix: str, codec: Codec,
                 where: str, allow_eviction: bool = False) -> None:
        if "{" in name or "}" in name:
            raise ValueError(f"store name {name!r}: braces are reserved for the hash tag")
        self.client = client
        self.name = name
        self.codec = codec
        self.where = where
        self.base = f"{prefix}:{{{name}}}:"
        self.keys = [self.base + suffix for suffix in
                     ("created", "recency", "sizes", "running", "meta", "pins", "aged")]
        self.scripts = Scripts(client)
        self.policy = StorePolicy()
        self.plan = EvictionPlan()  # its max_jobs and max_bytes are enforced at insert
        self.on_evicted: Optional[Callable[[list[Victim]], object]] = None
        self.before_call: Optional[Callable[[], object]] = None  # flushes batched reads
        #: Called when Redis refused a write as full: frees finished jobs at once (the
        #: emergency rule) and says how many went; the write is then tried again.
        self.on_full: Optional[Callable[[], int]] = None
        self._active_cache: tuple[Any, list[Any]] = (None, [])
        self.allow_eviction = allow_eviction
        self.reads: dict[str, None] = {}  # ids read since the last touch, oldest first
        self._reads_since = 0.0
        self._pending_takes: dict[str, str] = {}  # id -> token of a take whose reply was lost
        self._last_take = ""  # the token whose kept copy the next take deletes
        self._server_checked = False
        #: When (time.monotonic) a script last got an answer: Redis is reachable again.
        self.answered_at = float("-inf")
        #: When (time.monotonic) an operation last found Redis unreachable, and its error.
        self.unavailable: Optional[tuple[float, str]] = None

    # -- helpers ------------------------------------------------------------------------

    def translated(self, operation: str) -> contextlib.AbstractContextManager[None]:
        """Redis' errors during `operation` as ours; an unreachable Redis is remembered."""
        return translated(operation, self.where, self._unavailable)

    def _unavailable(self, error: str) -> None:
        self.unavailable = (time.monotonic(), error)
        self._server_checked = False  # a Redis that comes back may be another one

    def connect(self) -> None:
        """Check the server now if it can be reached (at construction): a misconfigured
        Redis is refused before the first job is stored; an unreachable one is checked at
        the first operation that reaches it."""
        with contextlib.suppress(RedisUnavailable):
            self.check_server()

    def run(self, script: str, *args: Any, operation: str,
            finishing: Optional[str] = None, flush: bool = True) -> Any:
        """Run script `script` with the index keys and this store's prefix first.

        When a full Redis refuses it (RedisFull), `on_full` frees finished jobs and the
        script runs again; if nothing could be freed and the write finishes a job, its
        `finishing` variant (allowed on a full Redis) runs instead.
        """
        if not self._server_checked:
            self.check_server(operation)
        if self.before_call is not None:
            self.before_call()
        if flush and self.reads:
            self.flush_reads()
        call_args = (self.base, *args)
        try:
            with self.translated(operation):
                reply = getattr(self.scripts, script)(keys=self.keys, args=call_args)
        except RedisFull:
            if self.on_full is not None and self.on_full():
                with contextlib.suppress(RedisFull), self.translated(operation):
                    return self._answered(
                        getattr(self.scripts, script)(keys=self.keys, args=call_args))
            if finishing is None:
                raise
            with self.translated(operation):
                reply = getattr(self.scripts, finishing)(keys=self.keys, args=call_args)
        return self._answered(reply)

    def _answered(self, reply: Any) -> Any:
        self.answered_at = time.monotonic()
        return reply

    def check_server(self, operation: str = "connect") -> None:
        """Refuse, clearly, a Redis older than 7.0 (the scripts use its flags) and one whose
        `maxmemory-policy` evicts any key (unless `allow_eviction`); checked at connect and
        again after Redis was unreachable. A server that does not say (a proxy, a fake) is
        taken at its word."""
        with self.translated(operation):
            server = self.info("server")
            memory = self.info("memory")
        found = str(server.get("redis_version", "")) if isinstance(server, Mapping) else ""
        require_redis_7(found, self.where)
        if not self.allow_eviction and isinstance(memory, Mapping):
            require_no_eviction(str(memory.get("maxmemory_policy", "noeviction")), self.where)
        self._server_checked = True

    def release_key(self, job_id: str) -> str:
        return f"{self.base}r:{job_id}"

    def active_args(self, job: Optional[Mapping[str, Any]]) -> list[Any]:
        """What decides activeness, for a script: the policy's field and its statuses, to be
        compared inside Redis; or a callable's answer on `job`, computed here by the writer
        (None: this write cannot change it)."""
        active = self.policy.active
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

    def decode_fields(self, flat: Sequence[_Raw], job_id: str) -> dict[str, Any]:
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

    def unreadable(self, job_id: str, field: str, error: Exception) -> RedisStoreError:
        return RedisStoreError(
            f"store {self.name!r}: job {job_id!r} (keys {self.base}j:{job_id} / "
            f"{self.base}r:{job_id}) cannot be read: field {field!r} with serializer "
            f"{self.codec.name!r}: {error}")

    def evicted(self, found: list[Victim]) -> None:
        if found and self.on_evicted is not None:
            self.on_evicted(found)

    # -- jobs ---------------------------------------------------------------------------

    def put(self, job_id: str, job: Mapping[str, Any], *, nx: bool = False) -> Optional[str]:
        """Store `job` whole (keeping the age of a job it replaces) and return its new
        generation; None if `nx` and the id exists. Evictions by the insert-time bounds are
        reported to `on_evicted`."""
        release = self.policy.release
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
        plan = self.plan
        reply = self.run(
            "put", job_id, "1" if nx else "0", *self.active_args(job),
            "" if plan.max_jobs is None else plan.max_jobs,
            "" if plan.max_bytes is None else plan.max_bytes, plan.order,
            len(small) // 2, *small, len(released) // 2, *released, operation="insert")
        if reply is None:
            return None
        self.evicted(victims(reply[1:]))
        return text(reply[0])

    def set_fields(self, job_id: str, gen: str, items: Sequence[tuple[str, Any]],
                   job: Optional[Mapping[str, Any]]) -> bool:
        """Write `items` (field, value) into job `job_id` of generation `gen` in one script:
        no reader sees some written and not others. False (nothing written) when the job
        is gone or its id now holds another job."""
        release = self.policy.release
        args: list[Any] = []
        for field, value in items:
            args += (field, self.dumps(job_id, field, value), "1" if field in release else "0")
        finishing = "finish_fields" if self.finishes(items, job) else None
        return self.wrote(self.run("set_fields", job_id, gen, len(items), *args,
                                   *self.active_args(job), *self.bound_args(),
                                   operation=_writing(items), finishing=finishing,
                                   flush=not finishing))

    def bound_args(self) -> tuple[Any, Any, str]:
        """The plan's insert bounds, as the write scripts take them."""
        plan = self.plan
        return ("" if plan.max_jobs is None else plan.max_jobs,
                "" if plan.max_bytes is None else plan.max_bytes, plan.order)

    def wrote(self, reply: Any) -> bool:
        """Whether a write script wrote; the evictions it made are reported."""
        if not reply:
            return False
        self.evicted(victims(reply[1:]))
        return True

    def finishes(self, items: Sequence[tuple[str, Any]],
                 job: Optional[Mapping[str, Any]]) -> bool:
        """Whether writing `items` leaves the job inactive by the policy's `active` (its
        field written with a status not in its values; a callable false on `job`)."""
        active = self.policy.active
        if isinstance(active, ActiveWhen):
            return any(field == active.field and not active({field: value})
                       for field, value in items)
        try:
            return job is not None and not active(job)
        except Exception:
            return False

    def del_fields(self, job_id: str, gen: str, fields: Sequence[str],
                   job: Optional[Mapping[str, Any]]) -> bool:
        """Delete `fields` of job `job_id` of generation `gen` in one script; as set_fields."""
        return self.wrote(self.run("del_fields", job_id, gen, len(fields), *fields,
                                   *self.active_args(job), *self.bound_args(),
                                   operation=f"delete of field(s) "
                                             f"{', '.join(map(repr, fields))}"))

    def get(self, job_id: str, *, touch: bool) -> Optional[dict[str, Any]]:
        """The job's small fields (release fields as IN_RELEASE), or None if absent."""
        if not self._server_checked:
            self.check_server("read")
        with self.translated("read"):
            found = self.client.hgetall(f"{self.base}j:{job_id}")
        self.answered_at = now = time.monotonic()
        if not found:  # a stored job's hash holds at least its generation
            return None
        fields = self.decode_fields([item for pair in found.items() for item in pair], job_id)
        if touch:
            reads = self.reads
            if reads:
                reads.pop(job_id, None)
            else:
                self._reads_since = now
            reads[job_id] = None
            if len(reads) >= READS_BATCH or now - self._reads_since >= READS_DELAY:
                self.flush_reads()
        return fields

    def flush_reads(self) -> None:
        """Send the recency updates reads owe, as one `touch` script (oldest read first)."""
        reads, self.reads = self.reads, {}
        if reads:
            self.touch(reads)

    def get_many(self, job_ids: Sequence[str], *, skip_unreadable: bool = False
                 ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(id, small fields) of the ids still present, without touching, pipelined; with
        `skip_unreadable`, a job that cannot be read is logged and left out."""
        # Plain HGETALLs, no script: a job's small-field hash always holds its generation, so
        # an empty reply is a job gone; and a cluster pipeline does not load scripts.
        if not self._server_checked:
            self.check_server("read")
        with self.translated("read"):
            pipe = self.client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hgetall(f"{self.base}j:{job_id}")
            replies = pipe.execute()
        self.answered_at = time.monotonic()
        for job_id, found in zip(job_ids, replies):
            if not found:
                continue
            reply = [item for pair in found.items() for item in pair]
            try:
                fields = self.decode_fields(reply, job_id)
            except RedisStoreError as error:
                if not skip_unreadable:
                    raise
                logger.warning("memguard: %s; skipped", error)
                continue
            yield job_id, fields

    def fetch_release(self, job_id: str, field: str) -> Any:
        """A release field's value, or None once the job has been evicted (released)."""
        with self.translated(f"read of field {field!r}"):
            value = self.client.hget(self.release_key(job_id), field)
        if value is None:
            return None
        try:
            return self.codec.loads(raw(value))
        except UnreadableValue as error:
            raise self.unreadable(job_id, field, error) from None

    def take(self, job_id: str) -> Optional[dict[str, Any]]:
        """Remove the job and return it whole, release fields included; None if absent.

        A take whose reply was lost (RedisUnavailable: a timeout, a dropped connection) may
        have been applied; its token is kept, and the next take of that id by this store
        sends it again, which returns the job taken then (kept in Redis TAKEN_TTL seconds).
        """
        token = self._pending_takes.get(job_id) or uuid.uuid4().hex
        try:
            reply = self.run("take", job_id, token, self._last_take, int(TAKEN_TTL * 1000),
                             operation="pop")
        except RedisUnavailable as error:
            self._pending_takes[job_id] = token
            raise RedisUnavailable(
                f"{error}; the pop may have been applied: pop({job_id!r}) on this store "
                f"again returns the job if so (kept in Redis {TAKEN_TTL:g} s)") from error
        self._pending_takes.pop(job_id, None)
        self._last_take = token
        if reply is None:
            return None
        small, released, _size = reply
        job = self.decode_fields(small, job_id)
        job.pop(GEN_FIELD, None)
        job.update(self.decode_fields(released, job_id))
        return {k: (None if v is IN_RELEASE else v) for k, v in job.items()}

    def delete(self, job_id: str, operation: str = "delete") -> Optional[int]:
        reply = self.run("delete", job_id, operation=operation)
        return None if reply is None else int(reply)

    def clear(self) -> None:
        while self.run("clear", PASS_BATCH, operation="clear"):
            pass

    def touch(self, job_ids: Iterable[str]) -> None:
        batch = list(job_ids)
        for start in range(0, len(batch), PASS_BATCH):
            with self.translated("touch"):
                self.scripts.touch(keys=self.keys,
                                   args=(self.base, *batch[start:start + PASS_BATCH]))

    def ids(self) -> list[str]:
        with self.translated("listing jobs"):
            return [text(job_id) for job_id in self.client.zrange(self.keys[0], 0, -1)]

    def newest(self) -> Optional[str]:
        with self.translated("listing jobs"):
            found = self.client.zrange(self.keys[0], -1, -1)
        return text(found[0]) if found else None

    def count(self) -> int:
        with self.translated("count"):
            return int(self.client.zcard(self.keys[0]))

    def contains(self, job_id: str) -> bool:
        with self.translated("lookup"):
            return self.client.zscore(self.keys[0], job_id) is not None

    def recency(self) -> list[str]:
        """Ids least recently used first; active jobs (out of the order) last, by write."""
        self.flush_reads()
        with self.translated("listing jobs"):
            pipe = self.client.pipeline(transaction=False)
            pipe.zrange(self.keys[1], 0, -1)
            pipe.zrange(self.keys[3], 0, -1)
            inactive, active = pipe.execute()
        return [text(job_id) for job_id in (*inactive, *active)]

    # -- passes, pins, figures ----------------------------------------------------------

    def run_pass(self, plan: EvictionPlan, found: list[Victim]) -> tuple[int, int]:
        """Run one pass of `plan`'s abandoned, age, idle, count and byte rules, appending
        what each batch evicted to `found` as it comes (a later batch that fails leaves the
        earlier ones there); the store's (jobs, bytes) after it."""
        args = ("" if plan.max_age is None else repr(plan.max_age),
                "" if plan.max_idle is None else repr(plan.max_idle),
                "" if plan.max_jobs is None else plan.max_jobs,
                "" if plan.max_bytes is None else plan.max_bytes, plan.order)
        while True:
            evicted, (jobs, size) = self.run(
                "pass", *args, PASS_BATCH,
                "" if plan.max_running is None else repr(plan.max_running), operation="pass")
            batch = victims(evicted)
            found += batch
            if len(batch) < PASS_BATCH:
                return int(jobs), int(size)

    def evict_bytes(self, order: str, need: int, found: list[Victim]) -> None:
        """Evict in `order` until `need` stored bytes went (or nothing evictable is left),
        appending each batch's victims to `found` as it comes."""
        while need > 0:
            batch = victims(self.run("evict_bytes", order, need, PASS_BATCH,
                                     operation="emergency"))
            found += batch
            need -= sum(size for _key, size, _cause in batch)
            if len(batch) < PASS_BATCH:
                break

    def pin(self, job_ids: Sequence[str], holder: str, lease: float) -> None:
        self.run("pin", holder, repr(lease), *job_ids, operation="pin")

    def unpin(self, job_id: str, holder: str) -> None:
        self.run("unpin", holder, job_id, operation="unpin")

    def figures(self) -> tuple[int, int, int, int]:
        """(jobs, active, bytes, pinned) read in one step."""
        jobs, active, size, pinned, _now = self.run("stats", operation="stats")
        return int(jobs), int(active), int(size), int(pinned)

    def memory(self) -> tuple[int, int]:
        """Redis' (used_memory, maxmemory); maxmemory 0 means no limit is set."""
        with self.translated("INFO memory"):
            info = self.info("memory")
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))

    def info(self, section: str) -> Any:
        """INFO `section` of the server holding this store's keys: on a Redis Cluster, the
        node that serves the store's hash slot (not whichever node the client picks)."""
        node_of = getattr(self.client, "get_node_from_key", None)
        if node_of is None:
            return self.client.info(section)
        node = node_of(self.keys[0])
        info = self.client.info(section, target_nodes=node)
        if isinstance(info, Mapping) and node.name in info and isinstance(info[node.name],
                                                                          Mapping):
            return info[node.name]  # some clients key a targeted reply by node
        return info


__all__ = ["IN_RELEASE", "PASS_BATCH", "RedisCore", "RedisStoreError", "Victim"]
