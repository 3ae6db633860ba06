"""The operations of one Redis store: its key layout and the script calls it makes.

`RedisCore` is what a `RedisStore` and its `RedisHandle` share: the store reads and writes
jobs through it, the handle runs passes, pins and stats through it. It holds the effective
`StorePolicy` and the store's `EvictionPlan` (both set by the handle on every policy
change): the policy decides which fields are released and what makes a job active, the
plan gives the scripts their bounds, ages and orders. It composes the store's connection
and its health (`memguard.redis._link`) and the encoding of its fields
(`memguard.redis._fields`).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable, Optional

from memguard._logging import logger
from memguard.errors import RedisFull, RedisStoreError, RedisUnavailable
from memguard.eviction.plan import EvictionPlan
from memguard.policy.options import StorePolicy
from memguard.redis._codec import Codec
from memguard.redis._fields import IN_RELEASE, JobFields, Victim, finishes, text, victims
from memguard.redis._link import RedisLink
from memguard.redis._scripts import GEN_FIELD

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

def _writing(items: Sequence[tuple[str, Any]]) -> str:
    return f"write of field(s) {', '.join(repr(field) for field, _value in items)}"


class RedisCore:
    """Keys, scripts and operations of store `name` under `prefix` on `client`."""

    def __init__(self, client: Any, *, name: str, prefix: str, codec: Codec,
                 where: str, allow_eviction: bool = False) -> None:
        if "{" in name or "}" in name:
            raise ValueError(f"store name {name!r}: braces are reserved for the hash tag")
        self.name = name
        self.base = f"{prefix}:{{{name}}}:"
        self.keys = [self.base + suffix for suffix in
                     ("created", "recency", "sizes", "running", "meta", "pins", "aged")]
        self.link = RedisLink(client, where=where, slot_key=self.keys[0],
                              allow_eviction=allow_eviction)
        self.fields = JobFields(codec, name=name, base=self.base)
        self.policy = StorePolicy()
        self.plan = EvictionPlan()  # its max_jobs and max_bytes are enforced at insert
        self.on_evicted: Optional[Callable[[list[Victim]], object]] = None
        self.before_call: Optional[Callable[[], object]] = None  # flushes batched reads
        #: Called when Redis refused a write as full: frees finished jobs at once (the
        #: emergency rule) and says how many went; the write is then tried again.
        self.on_full: Optional[Callable[[], int]] = None
        self.reads: dict[str, None] = {}  # ids read since the last touch, oldest first
        self._reads_since = 0.0
        self._pending_takes: dict[str, str] = {}  # id -> token of a take whose reply was lost
        self._last_take = ""  # the token whose kept copy the next take deletes

    # -- helpers ------------------------------------------------------------------------

    def run(self, script: str, *args: Any, operation: str,
            finishing: Optional[str] = None, flush: bool = True) -> Any:
        """Run script `script` with the index keys and this store's prefix first.

        When a full Redis refuses it (RedisFull), `on_full` frees finished jobs and the
        script runs again; if nothing could be freed and the write finishes a job, its
        `finishing` variant (allowed on a full Redis) runs instead.
        """
        link = self.link
        link.ensure_checked(operation)
        if self.before_call is not None:
            self.before_call()
        if flush and self.reads:
            self.flush_reads()
        call_args = (self.base, *args)
        try:
            with link.translated(operation):
                reply = getattr(link.scripts, script)(keys=self.keys, args=call_args)
        except RedisFull:
            if self.on_full is not None and self.on_full():
                with contextlib.suppress(RedisFull), link.translated(operation):
                    return link.answered(
                        getattr(link.scripts, script)(keys=self.keys, args=call_args))
            if finishing is None:
                raise
            with link.translated(operation):
                reply = getattr(link.scripts, finishing)(keys=self.keys, args=call_args)
        return link.answered(reply)

    def release_key(self, job_id: str) -> str:
        return f"{self.base}r:{job_id}"

    def active_args(self, job: Optional[Mapping[str, Any]]) -> list[Any]:
        """What decides activeness, for a script (`JobFields.active_args`)."""
        return self.fields.active_args(self.policy.active, job)

    def evicted(self, found: list[Victim]) -> None:
        if found and self.on_evicted is not None:
            self.on_evicted(found)

    # -- jobs ---------------------------------------------------------------------------

    def put(self, job_id: str, job: Mapping[str, Any], *, nx: bool = False) -> Optional[str]:
        """Store `job` whole (keeping the age of a job it replaces) and return its new
        generation; None if `nx` and the id exists. Evictions by the insert-time bounds are
        reported to `on_evicted`."""
        small, released = self.fields.split(job_id, job, self.policy.release)
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
            args += (field, self.fields.dumps(job_id, field, value),
                     "1" if field in release else "0")
        finishing = "finish_fields" if finishes(self.policy.active, items, job) else None
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

    def del_fields(self, job_id: str, gen: str, fields: Sequence[str],
                   job: Optional[Mapping[str, Any]]) -> bool:
        """Delete `fields` of job `job_id` of generation `gen` in one script; as set_fields."""
        return self.wrote(self.run("del_fields", job_id, gen, len(fields), *fields,
                                   *self.active_args(job), *self.bound_args(),
                                   operation=f"delete of field(s) "
                                             f"{', '.join(map(repr, fields))}"))

    def get(self, job_id: str, *, touch: bool) -> Optional[dict[str, Any]]:
        """The job's small fields (release fields as IN_RELEASE), or None if absent."""
        link = self.link
        link.ensure_checked("read")
        with link.translated("read"):
            found = link.client.hgetall(f"{self.base}j:{job_id}")
        link.answered_at = now = time.monotonic()
        if not found:  # a stored job's hash holds at least its generation
            return None
        fields = self.fields.decode([item for pair in found.items() for item in pair], job_id)
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
        link = self.link
        link.ensure_checked("read")
        with link.translated("read"):
            pipe = link.client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hgetall(f"{self.base}j:{job_id}")
            replies = pipe.execute()
        link.answered()
        for job_id, found in zip(job_ids, replies):
            if not found:
                continue
            reply = [item for pair in found.items() for item in pair]
            try:
                fields = self.fields.decode(reply, job_id)
            except RedisStoreError as error:
                if not skip_unreadable:
                    raise
                logger.warning("memguard: %s; skipped", error)
                continue
            yield job_id, fields

    def fetch_release(self, job_id: str, field: str) -> Any:
        """A release field's value, or None once the job has been evicted (released)."""
        with self.link.translated(f"read of field {field!r}"):
            value = self.link.client.hget(self.release_key(job_id), field)
        return None if value is None else self.fields.load(job_id, field, value)

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
        job = self.fields.decode(small, job_id)
        job.pop(GEN_FIELD, None)
        job.update(self.fields.decode(released, job_id))
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
            with self.link.translated("touch"):
                self.link.scripts.touch(keys=self.keys,
                                   args=(self.base, *batch[start:start + PASS_BATCH]))

    def ids(self) -> list[str]:
        with self.link.translated("listing jobs"):
            return [text(job_id) for job_id in self.link.client.zrange(self.keys[0], 0, -1)]

    def newest(self) -> Optional[str]:
        with self.link.translated("listing jobs"):
            found = self.link.client.zrange(self.keys[0], -1, -1)
        return text(found[0]) if found else None

    def count(self) -> int:
        with self.link.translated("count"):
            return int(self.link.client.zcard(self.keys[0]))

    def contains(self, job_id: str) -> bool:
        with self.link.translated("lookup"):
            return self.link.client.zscore(self.keys[0], job_id) is not None

    def recency(self) -> list[str]:
        """Ids least recently used first; active jobs (out of the order) last, by write."""
        self.flush_reads()
        with self.link.translated("listing jobs"):
            pipe = self.link.client.pipeline(transaction=False)
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

__all__ = ["PASS_BATCH", "RedisCore"]
