"""The emergency controller: when usage calls for a cleanup, and one cleanup run to its target."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Optional

import attrs

from memguard._logging import announce, logger
from memguard.eviction.events import CleanupReport
from memguard.memory.reclaim import Reclaim, reclaim
from memguard.memory.samples import MemorySample
from memguard.monitor.levels import HYSTERESIS
from memguard.policy.thresholds import Thresholds
from memguard.policy.units import format_duration, format_size

if TYPE_CHECKING:
    from memguard.monitor.host import MonitorHost

MAX_ROUNDS: Final = 3
"""A cleanup evicts, reclaims and re-samples at most this many times."""

FRAGMENTATION_RATIO: Final = 0.5
"""A judged round whose measured fall is below this share of its estimate is fragmentation."""

MIN_JUDGED: Final = 8 * 2**20
"""The fragmentation diagnosis judges only rounds that evicted at least this much (or 1% of
the limit, whichever is more): below it, allocator noise decides what usage does."""

_MIN_RECLAIM_GAP: Final = 1.0
"""At critical the controller acts on every sample; a round that evicted nothing skips the
reclaim (a full gc) when the last one was less than this many seconds ago."""

Probe = Callable[[], MemorySample]


@attrs.frozen
class Decision:
    """What the controller makes of one sample: act (and why), or hold back (and why)."""

    act: bool
    trigger: str = ""
    """``threshold``, ``predicted``, ``critical``, ``signal`` or ``forced`` when acting."""
    reason: str = ""
    """Why it holds back, when usage is at or above ``emergency`` and it does not act."""


def target_of(thresholds: Thresholds) -> Optional[int]:
    """Where a cleanup cleans down to: emergency_target, else just under emergency."""
    if thresholds.emergency_target is not None:
        return thresholds.emergency_target
    if thresholds.emergency is not None:
        return int(thresholds.emergency * (1 - 2 * HYSTERESIS))
    return None


@attrs.define
class _Progress:
    """Where a cleanup stands between its rounds."""

    sample: MemorySample
    usage: int
    tally: Counter[tuple[str, str]] = attrs.field(factory=Counter)
    freed: int = 0
    notes: list[str] = attrs.field(factory=list)
    rounds: int = 0
    failed: bool = False
    fragmented: bool = False


class EmergencyController:
    """Decides on each sample whether to clean up, runs the cleanup rounds, and keeps the
    back-off state. Not thread-safe on its own: the monitor serializes calls."""

    def __init__(self, manager: MonitorHost, *,
                 reclaimer: Callable[..., Reclaim] = reclaim) -> None:
        self.manager = manager
        self.reclaimer = reclaimer
        self.backoff_until: Optional[float] = None
        """Clock time until which a failed round holds the controller back (None: not)."""
        self.backoff_usage: Optional[int] = None
        """Usage when that round failed."""
        self.rearm_at: Optional[int] = None
        """Usage that ends the back-off early: where the failed round left usage plus the
        hysteresis margin of ``emergency`` (new memory, and likely new jobs, to act on)."""
        self.last: Optional[CleanupReport] = None
        self.last_decision = Decision(False)
        self._last_reclaim: Optional[float] = None
        self._last_duration = 0.0  # seconds the last cleanup took

    # -- deciding -----------------------------------------------------------------------------

    def decide(self, now: float, sample: MemorySample, thresholds: Thresholds, *,
               growth: Optional[float], horizon: float) -> Decision:
        """Act on `sample` or not. `growth` is bytes per second over the recent samples
        (since the last cleanup), `horizon` the seconds until the next sample. A predicted
        crossing acts only at or above the cleanup target (``emergency_target``)."""
        usage = sample.usage
        if thresholds.critical is not None and usage >= thresholds.critical:
            return self._remember(Decision(True, "critical"))
        emergency = thresholds.emergency
        if emergency is None:
            return self._remember(Decision(False))
        held = self._held_back(now, usage)
        if usage >= emergency:
            return self._remember(Decision(False, reason=held) if held
                                  else Decision(True, "threshold"))
        # Predicted: usage would cross `emergency` before the next sample (`horizon` is the
        # wait until then, not a fixed second). Never below the target: a cleanup from there
        # would evict for a crossing that the next sample can still catch, and a quiet
        # process would be cleaned sample after sample.
        target = target_of(thresholds)
        if (growth is not None and growth > 0 and usage + growth * horizon >= emergency
                and (target is None or usage >= target)):
            return self._remember(Decision(False, reason=held) if held
                                  else Decision(True, "predicted"))
        return self._remember(Decision(False))

    def _held_back(self, now: float, usage: int) -> str:
        """Why a back-off still holds (empty when it does not), ending it when it is over."""
        until, rearm = self.backoff_until, self.rearm_at
        if until is None or rearm is None:
            return ""
        if now >= until or usage >= rearm:
            self._end_backoff()
            return ""
        return self.held_back(now)

    def held_back(self, now: float) -> str:
        """Why the controller holds back now (empty when it does not)."""
        until, rearm = self.backoff_until, self.rearm_at
        if until is None or rearm is None or now >= until:
            return ""
        grows = f"until usage grows past {format_size(rearm)}"
        if math.isinf(until):
            return f"holding back after a fragmented round, {grows}"
        return (f"backing off for {format_duration(round(until - now, 3))} after a round that "
                f"could not lower usage (or {grows})")

    def _end_backoff(self) -> None:
        self.backoff_until = self.backoff_usage = self.rearm_at = None

    def _remember(self, decision: Decision) -> Decision:
        self.last_decision = decision
        return decision

    def backoff_left(self, now: float) -> Optional[float]:
        """Seconds of back-off left, or None when the controller is not backing off."""
        if self.backoff_until is None or now >= self.backoff_until:
            return None
        return self.backoff_until - now  # inf while holding back after fragmentation

    def state(self, now: float) -> dict[str, Any]:
        """A JSON-safe account of what the controller did last and why (for ``/memory``)."""
        last = self.last
        left = self.backoff_left(now)
        return {
            "decision": "act" if self.last_decision.act else "hold",
            "trigger": self.last_decision.trigger or None,
            "held_back": self.last_decision.reason or None,
            "backoff_seconds_left": None if left is None or math.isinf(left) else left,
            "backoff_until_growth": left is not None and math.isinf(left),
            "backoff_usage_bytes": self.backoff_usage,
            "last_cleanup": None if last is None else {
                "trigger": last.trigger, "rounds": last.rounds,
                "usage_before_bytes": last.usage_before, "usage_after_bytes": last.usage_after,
                "evicted": last.evicted, "note": last.note, "started_at": last.started_at},
        }

    # -- acting -------------------------------------------------------------------------------

    def run(self, sample: MemorySample, thresholds: Thresholds, probe: Probe, *,
            trigger: str, expected: Optional[int] = None, growth: Optional[float] = None,
            heap: Optional[Callable[[MemorySample], Optional[int]]] = None) -> CleanupReport:
        """Clean up from `sample` down to the target, in rounds; report what happened.

        `expected` is the usage the predictive trigger foresees at the next sample: the first
        round evicts down from it, not from the current usage. `growth` (bytes per second,
        measured before the cleanup) is what the app kept allocating meanwhile: a round's fall
        is judged with it added back, so a busy app is not taken for a fragmented heap.
        `heap(sample)` reads a fresh heap figure for the diagnosis.
        """
        clock = self.manager.clock
        start = clock()
        target = target_of(thresholds)
        limit = thresholds.limit or sample.limit
        judged = max(MIN_JUDGED, (limit or 0) // 100)
        done = _Progress(sample=sample, usage=sample.usage)
        ahead = max(sample.usage, expected or 0)  # a predicted crossing: clean from there
        if thresholds.emergency is not None and sample.usage < thresholds.emergency:
            # ... but from `emergency` at most: a fit of two samples just after a cleanup
            # can foresee 100 MB more than comes, and evicting for it took results about to
            # be read (measured under 100 MiB/s). If growth is that fast, the next sample
            # crosses and the threshold acts on what it measures.
            ahead = min(ahead, thresholds.emergency)
        if target is not None and ahead > target:
            # Give back free pages first: memory the allocator holds but nobody uses (freed
            # temporaries in the middle of an arena) costs no result to return. Without this,
            # a round evicts by the whole excess and the trim after it returns that memory as
            # well: measured, twice the estimate fell and the worker dropped far under the
            # target, results its clients were about to read with it.
            self._reclaim(clock(), full=False)
            fresh = probe()
            fell = sample.usage - fresh.usage
            ahead -= max(0, fell)
            done.sample, done.usage = fresh, fresh.usage
            if fell >= 2**20:
                done.notes.append(f"a trim gave back ~{format_size(fell)} before evicting")
        while target is not None and ahead > target and done.rounds < MAX_ROUNDS:
            # The app goes on allocating while the cleanup runs: clean that much lower too.
            need = ahead - target + self._busy(growth, self._last_duration)
            if not self._round(done, need, target, judged, probe, growth, heap):
                break
            ahead = done.usage
        else:
            if target is not None and done.usage > target:
                done.notes.append(f"still above target {format_size(target)} after "
                                  f"{MAX_ROUNDS} rounds")
        if done.rounds == 0 and trigger in ("forced", "signal", "requested"):
            # Asked for while already at or under the target: still give back what is free.
            self._reclaim(clock(), full=True)
            done.sample = probe()
            done.usage = done.sample.usage
        return self._settle(done, thresholds, start=start, before=sample.usage,
                            trigger=trigger)

    def _round(self, done: _Progress, need: int, target: int, judged: int, probe: Probe,
               growth: Optional[float],
               heap: Optional[Callable[[MemorySample], Optional[int]]]) -> bool:
        """One round: evict `need` bytes by estimate, give memory back, sample, judge.
        True when another round may help."""
        clock = self.manager.clock
        done.rounds += 1
        usage = done.usage
        heap_before = heap(done.sample) if heap is not None else done.sample.heap
        blocks_before = pymalloc_blocks()
        began = clock()
        freed = self._evict(need, done.tally)
        done.freed += freed
        if freed or self._reclaim_due(clock()):
            # Reference counting freed the results already: collect the youngest generation
            # and trim. A full collection of a big heap holds the GIL for long while the app
            # keeps allocating; only a round that looks like a failure pays for one (results
            # in reference cycles).
            self._reclaim(clock(), full=False)
        sample = probe()
        fell = usage - sample.usage + self._busy(growth, clock() - began)
        if sample.usage > target and freed >= judged and fell < FRAGMENTATION_RATIO * freed:
            self._reclaim(clock(), full=True)
            sample = probe()
            fell = usage - sample.usage + self._busy(growth, clock() - began)
        done.sample, done.usage = sample, sample.usage
        if sample.usage <= target:
            return False
        if freed >= judged and fell < FRAGMENTATION_RATIO * freed:
            heap_after = heap(sample) if heap is not None else sample.heap
            blocks_after = pymalloc_blocks()
            blocks_fell = (None if blocks_before is None or blocks_after is None
                           else blocks_before - blocks_after)
            done.notes.append(diagnose(freed, fell, heap_before, heap_after, blocks_fell))
            done.failed = done.fragmented = True
        if freed < need:  # the budget was not spent: every store ran out
            done.notes.append(f"nothing left to evict: {self._unevictable()}")
            done.failed = True
        return not done.failed

    def _settle(self, done: _Progress, thresholds: Thresholds, *, start: float, before: int,
                trigger: str) -> CleanupReport:
        """Back off after a failed cleanup (or end a back-off), then report and log it."""
        end = self.manager.clock()
        self._last_duration = end - start
        again = done.failed and self.backoff_until is not None and not done.tally
        if done.failed:
            # Nothing evictable: retry after the cooldown (jobs finish meanwhile). A
            # fragmented heap: evicting more at this usage would empty the stores for nothing,
            # so hold until usage grows (or reaches critical), however long that takes.
            wait = math.inf if done.fragmented else self.manager.policy.memory.cooldown
            self.backoff_until = end + wait
            self.backoff_usage = done.usage
            self.rearm_at = int(done.usage + (thresholds.emergency or done.usage) * HYSTERESIS)
        else:
            self._end_backoff()
        report = CleanupReport(
            "emergency", by_store=_by_store(done.tally), freed_estimate=done.freed,
            started_at=start, duration=end - start, usage_before=before,
            usage_after=done.usage, note="; ".join(done.notes), trigger=trigger,
            rounds=done.rounds)
        self.last = report
        if again:  # at critical, every sample acts: say "nothing left" once, not each time
            logger.debug("Memory cleanup: %s", report.summary())
        else:  # WARNING: an emergency is news to the operator (see announce)
            announce(logging.WARNING, "Memory cleanup: %s", report.summary())
        return report

    def _evict(self, need: int, tally: Counter[tuple[str, str]]) -> int:
        """Evict about `need` bytes by estimate; count what went by store and cause.

        The events (and the keys they name) die when this returns, before the reclaim:
        thousands of small keys alive during ``gc.collect()`` and ``malloc_trim`` would pin
        the allocator's pages that the evicted results shared with them.
        """
        freed = 0
        for event in self.manager.evict_bytes(need):
            tally[(event.store, event.cause.value)] += 1
            freed += event.size or 0
        return freed

    @staticmethod
    def _busy(growth: Optional[float], seconds: float) -> int:
        """What the app likely allocated during `seconds` of cleanup, at `growth` bytes/s."""
        return int(max(growth or 0.0, 0.0) * max(seconds, 0.0))

    def _reclaim_due(self, now: float) -> bool:
        last = self._last_reclaim
        return last is None or now - last >= _MIN_RECLAIM_GAP

    def _reclaim(self, now: float, *, full: bool) -> None:
        self._last_reclaim = now
        self.reclaimer(full=full)

    def _unevictable(self) -> str:
        jobs = active = 0
        for store in self.manager.handles():
            stats = store.stats()
            jobs += stats.jobs
            active += stats.active
        return f"{jobs} job(s) remain, {active} active or pinned"


def _by_store(tally: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    stores: dict[str, dict[str, int]] = {}
    for (store, cause), count in sorted(tally.items()):
        stores.setdefault(store, {})[cause] = count
    return stores


PYMALLOC_MAX_BLOCK: Final = 512
"""pymalloc serves objects of at most this many bytes; larger ones come from malloc."""


def pymalloc_blocks() -> Optional[int]:
    """Blocks pymalloc has handed out now (``sys.getallocatedblocks``), or None when small
    objects do not come from pymalloc."""
    if not _pymalloc():
        return None
    return sys.getallocatedblocks()


def diagnose(estimate: int, fell: int, heap_before: Optional[int],
             heap_after: Optional[int], blocks_fell: Optional[int] = None) -> str:
    """Why usage did not follow the evictions, from what the heap figure did and, under
    pymalloc, how many of its blocks were given up (`blocks_fell`).

    Every byte the evicted results freed was either malloc's (the heap figure falls) or in
    pymalloc blocks of at most `PYMALLOC_MAX_BLOCK` bytes (the block count falls): when both
    together cannot account for half the estimate, the results were not freed, and no
    allocator setting helps; when the blocks went but usage stayed, the arenas are to blame.
    """
    text = (f"stopped: evicting ~{format_size(estimate)} lowered usage by only "
            f"{format_size(fell)} ({max(fell, 0) / estimate:.0%})")
    heap_fell = None
    if heap_before is not None and heap_after is not None:
        heap_fell = heap_before - heap_after
        text += f"; heap {format_size(heap_before)} -> {format_size(heap_after)}"
    if heap_fell is not None and heap_fell >= FRAGMENTATION_RATIO * estimate:
        return text + (": the results were freed but malloc cannot return their pages "
                       "(fragmentation: live objects scattered among them); evicting more "
                       "would empty the stores for nothing")
    if heap_fell is not None and blocks_fell is not None:
        released = max(heap_fell, 0) + max(blocks_fell, 0) * PYMALLOC_MAX_BLOCK
        if released < FRAGMENTATION_RATIO * estimate:
            return text + (f"; pymalloc released {max(blocks_fell, 0)} blocks (at most "
                           f"{format_size(max(blocks_fell, 0) * PYMALLOC_MAX_BLOCK)}): the "
                           "evicted results were not freed, they are still referenced "
                           "elsewhere (an app cache, a list of results, a response or a "
                           "closure holding them); no allocator setting helps (not "
                           "PYTHONMALLOC=malloc either); evicting more would empty the stores "
                           "for nothing")
    if _pymalloc():  # pymalloc's arenas are not part of malloc's heap figure
        if blocks_fell is not None and blocks_fell > 0:
            text += f"; pymalloc released {blocks_fell} blocks"
        return text + (": fragmentation: the freed objects likely sit in pymalloc's arenas, "
                       "which go back to the system only when wholly empty (results of many small "
                       "objects, such as parsed JSON); the space is reused for new objects. "
                       "PYTHONMALLOC=malloc lets malloc_trim return it (docs/monitor.md)")
    if heap_fell is not None:
        return text + (": the results were not freed (still referenced elsewhere) or the memory "
                       "is not held by the stores; evicting more would empty them for nothing")
    return text + (": likely fragmentation (freed memory the allocator cannot return) or "
                   "results still referenced elsewhere; evicting more would empty the stores "
                   "for nothing")


def _pymalloc() -> bool:
    """Whether small objects come from pymalloc (the default) rather than malloc."""
    return os.environ.get("PYTHONMALLOC", "").lower() not in ("malloc", "malloc_debug",
                                                                "mimalloc", "mimalloc_debug")
