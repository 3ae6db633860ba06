"""A managed store against a reference model of DESIGN section 3, driven by hypothesis.

The model (`Reference`) is the obvious O(n) reading of the contract, with no markers, read
sets, rotations or parking: a dict of jobs, their creation times, one recency list (least
recent first; reads, `touch_job` and writes touch), pins, and the times of the passes. From
that it computes every eviction, with its cause and in order:

- insert: the job is stored (a replaced job keeps its creation time and is touched); while
  the store is over `max_jobs`, the first job in the store's order (`lru`: least recently
  used; `oldest`: created first; `largest`: the largest known size first, then the rest in
  LRU order) that is neither active nor the one just written is evicted
  (cause `count`); then the same for `max_bytes`, among jobs of known size (cause `bytes`);
- pass: age (every inactive job created at least `max_age` ago, oldest first), then idle,
  then the count and byte bounds (the same walks, the just-written exemption aside);
- active jobs (a `status` of the default `ActiveWhen`, or pinned) are never evicted; a
  status changed in place counts from the next look at the job, which for eviction is the
  next scan that reaches it (the predicate is asked then), so the model reads it live.

Idle time is dated at pass granularity (docs/stores.md): a touch counts as made at the next
idle marker, laid by a pass, at most one per `max_idle / 32`. A job is idle-evicted at the
first pass at least `max_idle` after the pass that dated its last touch. When passes follow
each other closer than `max_idle / 32`, which of them lays a marker is the store's choice,
so the model gives a window there (`Reference.dates`: evicted no earlier than its first
possible date allows, and no later than its last) and takes the store's choice within it.

After every step the store must hold exactly the model's jobs, and the evictions reported
since the previous step must be exactly the model's, `(key, cause)` in order, each of an
inactive job whose result was released. The recency order is compared after writes and
passes only: reading it drains the store's read set, which would hide a bug that depends on
reads still pending. Runs stay under 64 steps, so at most 64 markers are ever laid (past
that the closest two merge, a case this model leaves out).
"""

from __future__ import annotations

from collections import UserDict
from collections.abc import Iterable, MutableMapping
from typing import Any, Optional

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from memguard import Cause, MemoryManager, Policy, handle, managed_store
from memguard.testing import FakeClock, capture_evictions

pytestmark = pytest.mark.slow

KEYS = [f"j{i}" for i in range(6)]
KEY = st.sampled_from(KEYS)
STATUS = st.sampled_from(["done", "done", "failed", "running", "pending", "queued"])
ACTIVE_STATUSES = frozenset({"pending", "queued", "running", "processing", "in_progress"})
MAX_JOBS = 3
MAX_AGE = 60.0
MAX_IDLE = 16.0
MIN_GAP = MAX_IDLE / 32  # idle markers: at most one per MIN_GAP (docs/stores.md)
SIZES = st.sampled_from([16, 64, 128])
ADVANCES = st.sampled_from([0.25, 0.5, 1.0, 7.0, 15.0, 16.0, 17.0, 30.0, 60.0])
SETTINGS = settings(max_examples=100, stateful_step_count=60, deadline=None)


class Reference:
    """DESIGN section 3 for one in-process store, as plainly as it can be written."""

    def __init__(self, order: str, max_bytes: Optional[int] = None) -> None:
        self.order = order
        self.max_bytes = max_bytes
        self.sizes: dict[str, int] = {}  # key -> size of the job as written
        self.weighed: dict[str, int] = {}  # key -> size, for jobs whose size is known
        self.evicted: list[tuple[str, Cause, dict[str, Any]]] = []  # not yet checked
        self.jobs: dict[str, dict[str, Any]] = {}
        self.created: dict[str, float] = {}  # insertion order is creation order
        self.recency: list[str] = []  # least recently used first
        self.passes: list[float] = []  # the time of every pass so far
        self.touched: dict[str, int] = {}  # key -> passes run before its last touch
        self.pins: dict[str, int] = {}  # pins of absent keys wait for their job

    def active(self, key: str) -> bool:
        return self.pins.get(key, 0) > 0 or self.jobs[key].get("status") in ACTIVE_STATUSES

    def touch(self, key: str) -> None:
        self.recency.remove(key)
        self.recency.append(key)
        self.touched[key] = len(self.passes)

    def remove(self, key: str) -> None:
        """A job leaves (deleted or evicted): its pins go with it."""
        del self.jobs[key]
        del self.created[key]
        del self.touched[key]
        self.recency.remove(key)
        self.pins.pop(key, None)
        self.weighed.pop(key, None)
        del self.sizes[key]

    def evict(self, key: str, cause: Cause) -> None:
        self.evicted.append((key, cause, self.jobs[key]))
        self.remove(key)

    def in_order(self) -> list[str]:
        if self.order == "oldest":
            return list(self.created)
        if self.order == "largest":  # known sizes, largest first (no ties here), then the rest
            weighed = [k for k in self.recency if self.weighed.get(k)]
            rest = [k for k in self.recency if not self.weighed.get(k)]
            return sorted(weighed, key=lambda k: -self.weighed[k]) + rest
        return list(self.recency)

    def bound(self, writing: Optional[str] = None) -> None:
        """The count bound, then the byte bound: evict in the store's order until within
        each (`writing` stays; the byte bound takes only jobs whose size is known)."""
        while len(self.jobs) > MAX_JOBS:
            victim = next((k for k in self.in_order() if k != writing and not self.active(k)),
                          None)
            if victim is None:
                break
            self.evict(victim, Cause.COUNT)
        while self.max_bytes is not None and sum(self.weighed.values()) > self.max_bytes:
            victim = next((k for k in self.in_order()
                           if k != writing and k in self.weighed and not self.active(k)), None)
            if victim is None:
                break
            self.evict(victim, Cause.BYTES)

    def weigh(self, key: str) -> None:
        """A job is weighed when it is seen finished: at its write, or at its last unpin."""
        if not self.active(key):
            self.weighed[key] = self.sizes[key]

    def write(self, key: str, job: dict[str, Any], size: int, now: float) -> None:
        if key in self.jobs:
            self.touch(key)
        else:
            self.created[key] = now
            self.recency.append(key)
            self.touched[key] = len(self.passes)
        self.jobs[key] = job
        self.sizes[key] = size
        self.weighed.pop(key, None)  # a new value: weighed anew, now or once finished
        self.weigh(key)
        self.bound(writing=key)

    def read(self, key: str) -> None:
        if key in self.jobs:
            self.touch(key)

    def dates(self, key: str) -> tuple[Optional[float], Optional[float]]:
        """The earliest and the latest time the last touch of `key` may be dated at.

        A touch is dated by the next marker laid after it, and markers are laid by passes:
        no sooner than the first pass after the touch, and for sure by the first pass after
        it that comes `MAX_IDLE / 32` after an earlier one (a pass that follows another one
        more closely may lay none). None: no such pass yet.
        """
        after = self.passes[self.touched[key]:]
        if not after:
            return None, None
        first = after[0]
        previous = self.passes[self.touched[key] - 1] if self.touched[key] else None
        if previous is None or first - previous >= MIN_GAP:
            return first, first
        return first, next((p for p in after if p >= first + MIN_GAP), None)

    def run_pass(self, now: float, idle: Iterable[str]) -> None:
        """One pass at `now`; `idle` is what the store evicted as idle, which the model
        checks against the window `dates` gives for each job, then takes as is."""
        for key in [k for k in self.created if now - self.created[k] >= MAX_AGE]:
            if not self.active(key):
                self.evict(key, Cause.AGE)
        cutoff = now - MAX_IDLE
        may, must = [], set()
        for key in self.recency:
            earliest, latest = self.dates(key)
            if earliest is not None and earliest <= cutoff and not self.active(key):
                may.append(key)
                if latest is not None and latest <= cutoff:
                    must.add(key)
        idle = set(idle)
        assert must <= idle, f"idle jobs kept: {sorted(must - idle)}"
        assert idle <= set(may), f"jobs evicted as idle too early: {sorted(idle - set(may))}"
        for key in may:  # least recently used first
            if key in idle:
                self.evict(key, Cause.IDLE)
        self.passes.append(now)
        self.bound()


class ReferenceModelMachine(RuleBasedStateMachine):
    """Drives a real managed store and the `Reference` with the same steps."""

    ORDER = "lru"
    MAX_BYTES: Optional[int] = None
    IN_PLACE = True  # status changes in place (no write) or by replacing the job

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(0.0)
        self.manager = MemoryManager(Policy(), clock=self.clock)
        self.owner, self.jobs = self.build()
        self.handle = handle(self.owner)
        self.model = Reference(self.ORDER, self.MAX_BYTES)
        self.capture = capture_evictions(self.manager)
        self.events = self.capture.__enter__()
        self.seen = 0

    def build(self) -> tuple[Any, MutableMapping[str, Any]]:
        """The store instance and the mapping its jobs are written to and read from."""

        @managed_store(manager=self.manager, max_age=MAX_AGE, max_idle=MAX_IDLE,
                       max_jobs=MAX_JOBS, order=self.ORDER)
        class Jobs(dict):  # type: ignore[type-arg]
            pass

        store = Jobs()
        return store, store

    def teardown(self) -> None:
        self.capture.__exit__(None, None, None)

    def check_evictions(self) -> None:
        """The store evicted exactly what the model did since the last step, in order, and
        released each victim's result."""
        got = [(str(event.key), event.cause) for event in self.events[self.seen:]]
        self.seen = len(self.events)
        expected, self.model.evicted = self.model.evicted, []
        assert got == [(key, cause) for key, cause, _ in expected]
        for key, _, job in expected:  # the same jobs: none active, their memory given back
            assert job["status"] not in ACTIVE_STATUSES and job["result"] is None, (key, job)

    # -- rules -------------------------------------------------------------------------

    def write(self, key: str, job: dict[str, Any]) -> None:
        self.jobs[key] = job
        self.model.write(key, job, len(job["result"]), self.clock())
        self.check_evictions()
        assert self.handle.recency() == self.model.recency  # the write drained the reads

    def result(self, key: str, size: int) -> str:
        """The result stored under `key`: `size` characters (a byte store weighs len())."""
        return "x" * size

    @rule(key=KEY, status=STATUS, size=SIZES)
    def insert(self, key: str, status: str, size: int) -> None:
        self.write(key, {"status": status, "result": self.result(key, size)})

    @rule(key=KEY, how=st.sampled_from(["[]", "get", "touch_job"]))
    def read(self, key: str, how: str) -> None:
        """A read through `[]` or `get`, or the manager's `touch_job`: each touches."""
        if how == "get":
            assert self.jobs.get(key) is self.model.jobs.get(key)
        elif how == "touch_job":
            self.manager.touch_job(self.owner, key)  # an absent key is no error
        elif key in self.model.jobs:
            assert self.jobs[key] is self.model.jobs[key]
        else:
            with pytest.raises(KeyError):
                self.jobs[key]
        self.model.read(key)

    @rule(keys=st.lists(KEY, min_size=2, max_size=4))
    def read_many(self, keys: list[str]) -> None:
        """Several reads in a row, as polls do: their order between two writes matters."""
        for key in keys:
            self.read(key, how="get")

    @rule(key=KEY, status=STATUS)
    def set_status(self, key: str, status: str) -> None:
        if key not in self.model.jobs:
            return
        if self.IN_PLACE:
            self.model.jobs[key]["status"] = status  # as apps do: no write
        else:
            self.write(key, {**self.model.jobs[key], "status": status})

    @rule(key=KEY)
    def delete(self, key: str) -> None:
        if key in self.model.jobs:
            del self.jobs[key]
            self.model.remove(key)
        else:
            with pytest.raises(KeyError):
                del self.jobs[key]

    @rule(key=KEY)
    def pop(self, key: str) -> None:
        assert self.jobs.pop(key, None) is self.model.jobs.get(key)
        if key in self.model.jobs:
            self.model.remove(key)

    @rule(key=KEY, status=STATUS, size=SIZES)
    def setdefault(self, key: str, status: str, size: int) -> None:
        """A read when the key is stored (it touches), else a write."""
        if key in self.model.jobs:
            assert self.jobs.setdefault(key, {}) is self.model.jobs[key]
            self.model.read(key)
            return
        job = {"status": status, "result": self.result(key, size)}
        assert self.jobs.setdefault(key, job) is job
        self.model.write(key, job, len(job["result"]), self.clock())
        self.check_evictions()

    @rule(writes=st.lists(st.tuples(KEY, STATUS, SIZES), min_size=1, max_size=4))
    def update(self, writes: list[tuple[str, str, int]]) -> None:
        """One write per key, in order; each enforces the bound as it lands."""
        batch = {key: {"status": status, "result": self.result(key, size)}
                 for key, status, size in writes}
        sizes = {key: len(job["result"]) for key, job in batch.items()}
        self.jobs.update(batch)  # may evict some of `batch` as it goes: sizes from here
        for key, job in batch.items():
            self.model.write(key, job, sizes[key], self.clock())
        self.check_evictions()

    @rule()
    def clear(self) -> None:
        """Every job leaves, and every pin goes (those of keys not stored yet included)."""
        self.jobs.clear()
        for key in list(self.model.jobs):
            self.model.remove(key)
        self.model.pins.clear()

    @rule(key=KEY)
    def pin(self, key: str) -> None:
        self.handle.pin(key)
        self.model.pins[key] = self.model.pins.get(key, 0) + 1

    @rule(key=KEY)
    def unpin(self, key: str) -> None:
        if key in self.model.pins:
            self.model.pins[key] -= 1
            if not self.model.pins[key]:
                del self.model.pins[key]
                if key in self.model.jobs:
                    self.model.weigh(key)
        self.handle.unpin(key)  # more unpins than pins do nothing

    @rule(seconds=ADVANCES)
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(through_manager=st.booleans())
    def run_pass(self, through_manager: bool) -> None:
        now = self.clock()
        report = self.manager.run_cleanup() if through_manager else self.handle.cleanup()
        idle = [str(e.key) for e in self.events[self.seen:] if e.cause is Cause.IDLE]
        self.model.run_pass(now, idle)
        assert report.evicted == len(self.model.evicted)
        self.check_evictions()
        assert self.handle.recency() == self.model.recency  # the pass drained the reads
        # `stats().active` is what the last look at each job saw (docs/http.md): after a
        # pass, which looks again at every job it knew active, it counts no finished job
        active = sum(map(self.model.active, self.model.jobs))
        assert self.handle.stats().active <= active
        # and it weighed every job stored active that has finished since (DESIGN section 3)
        assert self.handle.stats().unweighed <= active

    @rule(seconds=ADVANCES)
    def tick(self, seconds: float) -> None:
        """What the monitor does: time passes, then the periodic pass runs."""
        self.clock.advance(seconds)
        self.run_pass(through_manager=True)

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def same_jobs(self) -> None:
        self.check_evictions()
        stored = dict(self.jobs.items())  # items() does not touch; get() and [] would
        assert set(stored) == set(self.model.jobs)
        assert all(stored[k] is job for k, job in self.model.jobs.items())
        assert dict(self.handle.index.created) == self.model.created
        stats = self.handle.stats()
        assert stats.jobs == len(self.model.jobs)
        pinned = sum(1 for k in self.model.jobs if k in self.model.pins)
        assert stats.pinned == pinned
        assert stats.active >= pinned  # a pin is seen at once
        if not self.IN_PLACE:  # every status change is a write: sizes are known exactly
            assert stats.bytes == sum(self.model.weighed.values())
            assert stats.unweighed == len(self.model.jobs) - len(self.model.weighed)


class OldestOrderMachine(ReferenceModelMachine):
    ORDER = "oldest"


class MappingAttributeMachine(ReferenceModelMachine):
    """The same contract through a `mapping=` attribute."""

    def build(self) -> tuple[Any, MutableMapping[str, Any]]:
        @managed_store(manager=self.manager, mapping="jobs", max_age=MAX_AGE,
                       max_idle=MAX_IDLE, max_jobs=MAX_JOBS, order=self.ORDER)
        class JobStore:
            def __init__(self) -> None:
                self.jobs: dict[str, Any] = {}

        store = JobStore()
        return store, store.jobs


class UserDictOldestMachine(ReferenceModelMachine):
    """The same contract on a `UserDict` (MutableMapping) store, oldest order."""

    ORDER = "oldest"

    def build(self) -> tuple[Any, MutableMapping[str, Any]]:
        @managed_store(manager=self.manager, max_age=MAX_AGE, max_idle=MAX_IDLE,
                       max_jobs=MAX_JOBS, order=self.ORDER)
        class Jobs(UserDict):  # type: ignore[type-arg]
            pass

        store = Jobs()
        return store, store


class ByteBoundMachine(ReferenceModelMachine):
    """The byte bound too, with `size=`. A job is weighed when seen finished; so that the
    model knows when that is without modelling the store's bounded re-checks, statuses
    change here by writes (which re-weigh at once), as apps that replace the job do."""

    MAX_BYTES = 200
    IN_PLACE = False

    def build(self) -> tuple[Any, MutableMapping[str, Any]]:
        @managed_store(manager=self.manager, max_age=MAX_AGE, max_idle=MAX_IDLE,
                       max_jobs=MAX_JOBS, max_bytes=self.MAX_BYTES, order=self.ORDER,
                       size=lambda job: len(job["result"]))
        class Jobs(dict):  # type: ignore[type-arg]
            pass

        store = Jobs()
        return store, store


class ByteBoundOldestMachine(ByteBoundMachine):
    ORDER = "oldest"


class ByteBoundLargestMachine(ByteBoundMachine):
    """Largest first. Equal sizes go to the job weighed first (docs/decisions.md, the index
    split), which depends on heap entries the contract does not name; so that the model
    need not predict ties, no two jobs here weigh the same (the key's number is added)."""

    ORDER = "largest"

    def result(self, key: str, size: int) -> str:
        return "x" * (size + KEYS.index(key))


TestDictLru = ReferenceModelMachine.TestCase
TestDictLru.settings = SETTINGS
TestDictOldest = OldestOrderMachine.TestCase
TestDictOldest.settings = SETTINGS
TestMappingAttributeLru = MappingAttributeMachine.TestCase
TestMappingAttributeLru.settings = SETTINGS
TestUserDictOldest = UserDictOldestMachine.TestCase
TestUserDictOldest.settings = SETTINGS


# -- discrepancies the machine found, kept as their smallest reproductions -------------------

def _two_jobs_read_in_turn(how: str) -> tuple[MemoryManager, Any]:
    """Store `a` active (running, or pinned), `b` finished; `a` finishes (in place, or by
    its last unpin) with the reads `b` then `a` still pending when that is seen."""
    manager = MemoryManager(Policy(), clock=FakeClock(0.0))

    @managed_store(manager=manager, max_jobs=2)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    jobs = handle(store)
    if how == "pinned":
        jobs.pin("a")
    store["a"] = {"status": "running" if how == "in place" else "done", "result": "a"}
    store["b"] = {"status": "done", "result": "b"}
    if how == "in place":
        store["a"]["status"] = "done"
    store["b"]
    store["a"]  # read last: of the two, `a` must be evicted last
    return manager, store


def test_a_finished_job_keeps_its_read_order_through_a_pass() -> None:
    manager, store = _two_jobs_read_in_turn("in place")
    handle(store).cleanup()  # re-checks `a`, seen finished now
    with capture_evictions(manager) as events:
        store["c"] = {"status": "done", "result": "c"}  # over max_jobs=2
    assert [event.key for event in events] == ["b"]


def test_a_finished_job_keeps_its_read_order_through_its_last_unpin() -> None:
    manager, store = _two_jobs_read_in_turn("pinned")
    handle(store).unpin("a")
    with capture_evictions(manager) as events:
        store["c"] = {"status": "done", "result": "c"}  # over max_jobs=2
    assert [event.key for event in events] == ["b"]


TestByteBoundLru = ByteBoundMachine.TestCase
TestByteBoundLru.settings = SETTINGS
TestByteBoundOldest = ByteBoundOldestMachine.TestCase
TestByteBoundOldest.settings = SETTINGS
TestByteBoundLargest = ByteBoundLargestMachine.TestCase
TestByteBoundLargest.settings = SETTINGS
