"""The periodic pass of a `LocalHandle` (see memguard.stores.handle_state): its O(1) skip
when nothing can be due (`nothing_due`, and `_note_due` after a pass that ran), the pass
itself through the eviction runner, and the catch-ups before it: plain dicts' keys, jobs seen
active looked at again, deferred weighing. Also the monitor's per-sample catch-up
(`notice_finished`) and the soft-bound source of the global emergency order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

from memguard.eviction.events import Cause, CleanupReport, EvictionEvent
from memguard.eviction.rules import Pass
from memguard.eviction.runner import run_pass
from memguard.index.job_index import RECHECK_PER_PASS, RECHECK_PER_SAMPLE, Key
from memguard.stores.handle_state import HandleState

_MISSING: Any = object()


class PassPath(HandleState):
    """A periodic pass, skipped in O(1) when nothing is due, and its catch-ups."""

    def cleanup(self, *, now: Optional[float] = None) -> CleanupReport:
        """Run one periodic pass of this store's pipeline and report it (soft bounds are
        enforced when the manager says memory is at or above `warning`)."""
        start = self.manager.clock() if now is None else now
        pressure = self.manager.under_pressure()
        events = self.run_pass(Pass(now=start, order=self.plan.order, pressure=pressure))
        return CleanupReport.from_events("periodic", events, started_at=start)

    def run_pass(self, ctx: Pass) -> list[EvictionEvent]:
        """One pass of the plan's pipeline (an emergency when `ctx` carries a budget).

        A periodic pass that can evict nothing and has no upkeep to do returns at once, in
        O(1) (`nothing_due`); after a pass that ran, the earliest time the age bound can evict is
        noted (`_note_due`)."""
        if ctx.budget is None and self.nothing_due(ctx.now):
            if self.index.deferred:  # the pass's one upkeep left: weigh (never a byte
                with self.lock:  # bound here: a plan with one weighs at insert)
                    self.index.weigh_deferred()
            return []
        events = run_pass(self.plan.pipeline, self, ctx)
        self._note_due(ctx.now)
        return events

    def nothing_due(self, now: float) -> bool:
        """Whether a periodic pass at `now` would evict nothing and do no upkeep but weigh:
        only built-in bounds in the pipeline (age, count, bytes, emergency: `_checkable`),
        the age bound not due (`_due`, a lower bound on the oldest job's expiry), the store
        within its count and byte bounds, nothing to re-check, reconcile or take back from
        parking. O(1): a few truth tests, no lock (a racing write only makes the next pass
        the one that sees it)."""
        index = self.index
        return (self._checkable and now < self._due
                and not index.activity.rotation and not index.returned and not index.resync
                and not self._backend.needs_sync
                and (self._max_jobs is None or len(index.created) <= self._max_jobs)
                and (self._max_bytes is None or index.total_bytes <= self._max_bytes))

    def _note_due(self, now: float) -> None:
        """After a pass at `now`: the earliest time its age bound can evict (the oldest job
        in the age order, or, in an empty store, a job created now). Writes only add
        younger jobs and removals only make the oldest younger, so this stays a lower
        bound until the next pass; a job back from parking sits in `index.returned`, which
        `nothing_due` checks."""
        max_age = self.plan.max_age
        if not self._checkable:
            return
        if max_age is None:
            self._due = float("inf")
            return
        with self.lock:
            created = self.index.created
            oldest = next(iter(self.index.orders.aged), _MISSING)
            when = created.get(oldest, now) if oldest is not _MISSING else now
            self._due = min(when, now) + max_age

    def soft_expired(self, now: float) -> Iterator[tuple[Key, Cause]]:
        """The jobs of this store past a soft bound at `now` (`bounds = "soft"`), as
        `(key, cause)`, oldest expiry first within each bound (`EvictionPlan.soft_expired`
        says the order); nothing when the bounds are hard.

        The source of the middle tier of the global emergency order (DESIGN section 10).
        The caller holds `lock` for the whole iteration and evicts each key it is given
        (`evict_locked(key, cause)`) before asking for the next, as with
        `JobIndex.candidates`; stopping early is fine. Active jobs are never yielded.
        """
        if not self._soft:
            return iter(())
        self.index.drain_reads()
        return self.plan.soft_expired(self.index, now)

    def prepare_pass(self, ctx: Optional[Pass] = None) -> None:
        """Before a pass (lock held): catch up with plain dicts, look again at the
        known-active jobs, round robin, until RECHECK_PER_PASS are found still running
        (finished ones, weighed once in their life, do not count; an emergency looks at
        all of them). A store whose index was repaired after a fork (`JobIndex.resync`)
        catches up with its keys once."""
        if self._backend.needs_sync or self.index.resync:
            self.index.resync = False
            self.reconcile()
        emergency = ctx is not None and ctx.budget is not None
        self.index.weigh_deferred()
        self.index.recheck(None if emergency else RECHECK_PER_PASS)

    def notice_finished(self) -> None:
        """Look again at a batch of the jobs seen active (`RECHECK_PER_SAMPLE` still
        running at most, any number found finished), so the index learns soon that a job
        stored running was completed in place: its finish is dated then, and a read after
        it counts as its delivery. The reads since the last drain are drained first (a
        delivery is dated at its drain: this bounds how late). The monitor calls this at
        each sample; without reads or known active jobs it costs two truth tests."""
        index = self.index
        if index.activity.rotation or index.reads or index.deferred:
            with self.lock:
                index.weigh_deferred()  # the monitor's byte totals are a sample late at most
                index.drain_reads()  # deliveries dated within a sample of the read
                index.recheck(RECHECK_PER_SAMPLE)

    def reconcile(self) -> None:
        """Make the index match the store's keys after writes it could not see: plain dicts,
        `dict.__init__`, a user's own `update`. O(n); new keys count as created now."""
        with self.lock:
            present = self._backend.list_keys()
            for key in set(self.index.created).difference(present):
                self.index.remove(key)
            for key in present:
                if key not in self.index:
                    self._adopt(key)

    def _adopt(self, key: Key) -> None:
        with self.lock:
            try:
                job = self._backend.get(key)
            except KeyError:  # gone again meanwhile (a plain dict written by another thread)
                return
            if key not in self.index:
                self.index.add(key, job, self.manager.clock())
