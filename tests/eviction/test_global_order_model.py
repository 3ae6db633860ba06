"""The global emergency order against a model, driven by hypothesis.

Three real stores (two dict subclasses, one `mapping=` class) share a manager on a fake
clock. Jobs are written finished or running, completed in place (the store never sees it),
read, deleted; the monitor's per-sample re-check (`notice_finished`) and emergencies of any
budget run in between. The model is the plain reading of DESIGN section 10 with the index's
documented timing:

- a job is finished for the index from its write (written finished) or from the re-check
  that finds it finished (completed in place), stamped then;
- a read is taken when its store's reads are drained (at a re-check that finds a job
  finished, at each sample, at an emergency); it is a delivery (stamped then) if the job
  was known finished at that moment. A write does not drain: it joins the pending reads as
  a touch that is never a delivery, and replaces a pending read of its own key;
- an emergency first re-checks every running job (stores in the order it visits them:
  most weighed bytes first), then evicts delivered jobs by delivery stamp, then undelivered
  finished jobs by finish stamp, until the budget is spent; running jobs never.

Stamps are compared only among themselves, so the model keeps its own counter.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from memguard import MemoryManager, Policy, handle, managed_store
from memguard.testing import FakeClock, FakeProbe, capture_evictions

STORES = ("a", "b", "c")
KEYS = st.sampled_from([f"{store}{n}" for store in STORES for n in range(3)])
SIZES = st.integers(min_value=1, max_value=3)


class StoreModel:
    """What the model knows of one store: its jobs, pending reads and running jobs in the
    round-robin order the index re-checks them in (`ActiveJobs`). `pending` maps each key
    touched since the last drain, least recent first, to whether that touch was a read
    (True) or a write (False)."""

    def __init__(self) -> None:
        self.pending: dict[str, bool] = {}
        self.known: dict[str, None] = {}
        self.rotation: deque[str] = deque()

    def mark(self, key: str) -> None:
        if key not in self.known:
            self.known[key] = None
            self.rotation.append(key)
            if len(self.rotation) > 2 * len(self.known) + 64:
                self.rotation = deque(self.known)


class GlobalOrderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.manager = MemoryManager(Policy(), clock=FakeClock(0.0),
                                     probe=FakeProbe("100MB", "512MB"))

        @managed_store(name="a", manager=self.manager, size=lambda job: job["size"])
        class StoreA(dict):  # type: ignore[type-arg]
            pass

        @managed_store(name="b", manager=self.manager, size=lambda job: job["size"])
        class StoreB(dict):  # type: ignore[type-arg]
            pass

        @managed_store(name="c", manager=self.manager, mapping="jobs",
                       size=lambda job: job["size"])
        class Service:
            def __init__(self) -> None:
                self.jobs: dict[str, Any] = {}

        self.service = Service()
        self.real: dict[str, Any] = {"a": StoreA(), "b": StoreB(), "c": self.service.jobs}
        # the model
        self.jobs: dict[str, dict[str, Any]] = {}  # key -> the job object stored
        self.finished_known: set[str] = set()  # weighed: the index knows it finished
        self.delivered: dict[str, int] = {}
        self.finished: dict[str, int] = {}
        self.stores = {name: StoreModel() for name in STORES}
        self.stamps = 0

    # -- the model's steps ---------------------------------------------------------------

    def stamp(self) -> int:
        self.stamps += 1
        return self.stamps

    def drain(self, name: str) -> None:
        model = self.stores[name]
        for key, is_read in list(model.pending.items()):  # least recently touched first
            if is_read and key in self.jobs and key in self.finished_known:
                self.delivered.pop(key, None)
                self.finished.pop(key, None)
                self.delivered[key] = self.stamp()
        model.pending.clear()

    def recheck(self, name: str) -> None:
        """`ActiveJobs.recheck` for one lap; those found finished are stamped finished."""
        model = self.stores[name]
        if len(model.rotation) > 2 * len(model.known) + 64:
            model.rotation = deque(model.known)
        for _ in range(len(model.rotation)):
            key = model.rotation.popleft()
            if key not in model.known:
                continue
            if self.jobs[key]["status"] == "running":
                model.rotation.append(key)
                continue
            del model.known[key]
            self.drain(name)  # pending reads first, as reads of the running job
            self.finished_known.add(key)
            self.finished[key] = self.stamp()

    def forget(self, key: str) -> None:
        self.jobs.pop(key, None)
        self.finished_known.discard(key)
        self.delivered.pop(key, None)
        self.finished.pop(key, None)
        self.stores[key[0]].known.pop(key, None)

    def weighed_bytes(self, name: str) -> int:
        return sum(job["size"] for key, job in self.jobs.items()
                   if key[0] == name and key in self.finished_known)

    # -- rules -----------------------------------------------------------------------------

    @rule(key=KEYS, size=SIZES, status=st.sampled_from(["done", "done", "running"]))
    def write(self, key: str, size: int, status: str) -> None:
        name = key[0]
        job = {"status": status, "size": size}
        self.real[name][key] = job
        pending = self.stores[name].pending
        if pending:  # the write joins the pending touches (`WRITTEN`), no drain
            pending.pop(key, None)
            pending[key] = False
        self.jobs[key] = job
        self.delivered.pop(key, None)
        self.finished.pop(key, None)
        if status == "done":
            self.finished_known.add(key)
            self.stores[name].known.pop(key, None)
            self.finished[key] = self.stamp()
        else:
            self.finished_known.discard(key)
            self.stores[name].mark(key)

    def stored(self, data: st.DataObject) -> str:
        """A stored key (the rules that use it are skipped while no job is stored)."""
        return data.draw(st.sampled_from(sorted(self.jobs)))

    @precondition(lambda self: any(j["status"] == "running" for j in self.jobs.values()))
    @rule(data=st.data())
    def complete_in_place(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(
            sorted(k for k, job in self.jobs.items() if job["status"] == "running")))
        self.jobs[key]["status"] = "done"  # the store never sees this write

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        key = self.stored(data)
        name = key[0]
        assert self.real[name][key] is self.jobs[key]
        pending = self.stores[name].pending
        pending.pop(key, None)
        pending[key] = True

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        key = self.stored(data)
        del self.real[key[0]][key]
        self.forget(key)

    @rule()
    def sample(self) -> None:
        """What the monitor does at each sample."""
        self.manager.notice_finished()
        for name in STORES:  # handles() order: by name
            self.drain(name)
            self.recheck(name)

    @rule(budget=st.integers(min_value=1, max_value=12))
    def emergency(self, budget: int) -> None:
        with capture_evictions(self.manager) as events:
            self.manager.evict_bytes(budget)
        got = [event.key for event in events]
        # stores visited most weighed bytes first (ties by name); each re-checks every
        # running job, then the tiers drain every store's reads in that order
        visit = sorted(STORES, key=self.weighed_bytes, reverse=True)
        for name in visit:
            self.recheck(name)
        for name in visit:
            self.drain(name)
        order = ([k for k, _ in sorted(self.delivered.items(), key=lambda kv: kv[1])]
                 + [k for k, _ in sorted(self.finished.items(), key=lambda kv: kv[1])])
        expected, spent = [], 0
        for key in order:
            if spent >= budget:
                break
            expected.append(key)
            spent += self.jobs[key]["size"]
        assert got == expected, (got, expected, self.delivered, self.finished)
        for key in got:
            self.forget(key)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def same_jobs(self) -> None:
        for name in STORES:
            assert sorted(self.real[name]) == sorted(k for k in self.jobs if k[0] == name)

    @invariant()
    def running_jobs_are_in_no_tier(self) -> None:
        for name in STORES:
            index = handle(self.real[name]).index
            for key in list(index.orders.delivered) + list(index.orders.finished):
                assert key in self.jobs and key in self.finished_known
                assert not (key in index.orders.delivered and key in index.orders.finished)


GlobalOrderMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40,
                                                deadline=None)
TestGlobalOrder = GlobalOrderMachine.TestCase
