"""One stress run: the traffic replayed on a simulated clock, guarded or not."""

from __future__ import annotations

import heapq
import resource
import sys
import time
from collections import Counter
from typing import Any, Callable, Optional

import attrs

from memguard.eviction.events import CleanupReport, EvictionEvent
from memguard.manager import MemoryManager
from memguard.memory.probes import ProcessProbe
from memguard.monitor.levels import LEVELS, raw_level
from memguard.monitor.thread import Monitor
from memguard.policy.options import MemoryPolicy
from memguard.stores.trace import Recorder
from memguard.testing import FakeClock
from memguard.tools.reference import clairvoyant
from memguard.tools.stress.config import _ACTIVE, SEED_STORES, StressConfig
from memguard.tools.stress.payloads import _result
from memguard.tools.stress.results import Mark, Sample, StressResult
from memguard.tools.stress.stores import _Bound, _build_stores
from memguard.tools.stress.traffic import _demands, _Plan, _plan_traffic

_ARRIVE, _START, _FINISH, _POLL, _RETURN, _TICK, _SAMPLE = range(7)

Progress = Callable[[float, Sample], object]


class _Run:
    """The state of one run; `execute` is the event loop."""

    def __init__(self, config: StressConfig, progress: Optional[Progress]) -> None:
        self.config = config
        self.progress = progress
        self.policy = config.resolved_policy()
        memory: MemoryPolicy = self.policy.memory
        assert isinstance(memory.limit, int)  # resolved_policy made sure
        self.limit: int = memory.limit
        self.thresholds = memory.resolve(self.limit)
        self.profiles = SEED_STORES
        self.plans = _plan_traffic(config, self.profiles)
        self.clock = FakeClock(0.0)
        self.probe = ProcessProbe(self.limit, heap=False)
        self.manager: Optional[MemoryManager] = None
        self.monitor: Optional[Monitor] = None
        self.emergencies: list[CleanupReport] = []
        self.marks: list[Mark] = []
        self.state: dict[str, str] = {}
        self.lost: set[str] = set()
        self.wanted: set[str] = set()  # finished jobs a client came back for (not delivered)
        self.results_lost: set[str] = set()  # ... and found evicted
        self.evicted_since_sample = 0
        self.counts: Counter[str] = Counter()
        self.evictions: Counter[str] = Counter()
        self.evicted_bytes = 0
        self.samples: list[Sample] = []
        self.stores: list[_Bound] = []
        self.events: list[tuple[float, int, int, int]] = []
        self._seq = 0
        self.recorder: Optional[Recorder] = None
        #: Nominal result bytes of the finished jobs the stores hold (plan sizes), and their
        #: peak: the budget the clairvoyant reference gets ("at the same peak").
        self.held_results: dict[str, int] = {}
        self.held_bytes = 0
        self.held_peak = 0

    # -- set-up --------------------------------------------------------------------------------

    def _guard(self) -> None:
        """A manager of its own on the simulated clock and a real probe; its monitor is driven
        by hand (`_tick`), never as a thread, so decisions follow simulated time."""
        manager = MemoryManager(self.policy, clock=self.clock, probe=ProcessProbe(self.limit))
        manager.on_evict(self._evicted)
        manager.monitor = self.monitor = Monitor(manager)
        self.manager = manager
        if self.config.record is not None:
            self.recorder = manager.record(self.config.record)

    def _evicted(self, event: EvictionEvent) -> None:
        self.evictions[event.cause.value] += 1
        self.evicted_bytes += event.size or 0
        self.evicted_since_sample += 1
        if self.state.get(str(event.key)) in _ACTIVE:
            self.lost.add(str(event.key))
        self.held_bytes -= self.held_results.pop(str(event.key), 0)

    def _at(self, when: float, kind: int, job: int = -1) -> None:
        self._seq += 1
        heapq.heappush(self.events, (when, self._seq, kind, job))

    # -- the loop ------------------------------------------------------------------------------

    def execute(self) -> StressResult:
        started = time.perf_counter()
        if self.config.guard:
            self._guard()
        self.stores = _build_stores(self.profiles, self.manager)
        horizon = self.config.minutes * 60.0
        for i, plan in enumerate(self.plans):
            self._at(plan.arrive, _ARRIVE, i)
        every = self.config.sample_every
        for k in range(int(horizon // every) + 1):
            self._at(k * every, _SAMPLE)
        if self.monitor is not None:  # it samples as the thread would; passes when due
            self._at(self.monitor.sample_interval, _TICK)
        start_usage = self.probe().usage
        handlers = (self._arrive, self._start, self._finish, self._poll, self._return,
                    self._tick, self._sample)
        while self.events:
            when, _, kind, job = heapq.heappop(self.events)
            if when > horizon:
                break
            if when > self.clock.now:
                self.clock.advance(when - self.clock.now)
            handlers[kind](job)
        if not self.samples or self.samples[-1].t < horizon:
            self.clock.advance(max(0.0, horizon - self.clock.now))
            self._sample(-1)
        if self.recorder is not None:
            self.recorder.close()
        if self.evicted_since_sample:  # evicted at the last instant, after its sample
            last = self.samples[-1]
            self.samples[-1] = attrs.evolve(last, evicted=last.evicted + self.evicted_since_sample)
        return self._result(start_usage, time.perf_counter() - started)

    # -- events ----------------------------------------------------------------------------

    def _arrive(self, i: int) -> None:
        plan = self.plans[i]
        _, jobs, _ = self.stores[plan.store]
        jobs[plan.id] = {"id": plan.id, "kind": self.profiles[plan.store].name,
                         "status": "pending", "created_at": plan.arrive, "progress": 0,
                         "result": None, "error": None}
        self.state[plan.id] = "pending"
        self.counts["submitted"] += 1
        self._at(plan.start, _START, i)
        if plan.polled:
            self._at(plan.arrive + plan.poll_every, _POLL, i)

    def _present(self, plan: _Plan) -> Optional[dict[str, Any]]:
        """The job as its worker reads it; records an active job that disappeared."""
        _, jobs, _ = self.stores[plan.store]
        job: Optional[dict[str, Any]] = jobs.get(plan.id)
        if job is None and self.state.get(plan.id) in _ACTIVE:
            self.lost.add(plan.id)
        return job

    def _start(self, i: int) -> None:
        plan = self.plans[i]
        job = self._present(plan)
        if job is None:
            return
        job["status"] = "running"
        job["progress"] = 10
        self.state[plan.id] = "running"
        self._at(plan.finish, _FINISH, i)

    def _finish(self, i: int) -> None:
        plan = self.plans[i]
        job = self._present(plan)
        if job is None:
            return
        if plan.fails:
            job.update(status="failed", error="upstream model timed out", progress=100)
            self.counts["failed"] += 1
        else:
            job.update(status="completed", result=_result(plan, self.profiles[plan.store]),
                       progress=100, finished_at=self.clock.now)
            self.counts["completed"] += 1
        self.state[plan.id] = str(job["status"])
        size = 0 if plan.fails else plan.size
        self.held_results[plan.id] = size
        self.held_bytes += size
        self.held_peak = max(self.held_peak, self.held_bytes)
        _, jobs, _ = self.stores[plan.store]
        jobs[plan.id] = job  # stored again with its result, as the seed's workers did
        for when in plan.returns:
            self._at(when, _RETURN, i)

    def _poll(self, i: int) -> None:
        plan = self.plans[i]
        _, _, read = self.stores[plan.store]
        job = read(plan.id)
        if job is None:
            self._missed(plan)
            self.counts["poll_misses"] += 1
            if self.state.get(plan.id) not in _ACTIVE:  # finished, then evicted before read
                self.wanted.add(plan.id)
                self.results_lost.add(plan.id)
        elif job["status"] in _ACTIVE:
            self._at(self.clock.now + plan.poll_every, _POLL, i)
        else:
            self.counts["results_read"] += 1  # delivered: its client did not come back

    def _return(self, i: int) -> None:
        plan = self.plans[i]
        _, _, read = self.stores[plan.store]
        job = read(plan.id)
        self.counts["return_hits" if job is not None else "return_misses"] += 1
        self.wanted.add(plan.id)
        if job is None:
            self._missed(plan)
            self.results_lost.add(plan.id)

    def _missed(self, plan: _Plan) -> None:
        """A client found nothing: the trace must know (the store never sees such a read)."""
        if self.recorder is not None:
            self.recorder.missed(self.profiles[plan.store].name, plan.id)

    def _tick(self, _: int) -> None:
        assert self.monitor is not None
        result = self.monitor.tick()
        for report in (result.cleanup, result.emergency):
            if report is not None and (report.evicted or report.kind == "emergency"):
                self.marks.append(Mark(self.clock.now, report.kind, report.evicted,
                                       report.reclaimed))
        if result.emergency is not None:
            self.emergencies.append(result.emergency)
        self._at(self.clock.now + self.monitor.next_wait(), _TICK)

    def _sample(self, _: int) -> None:
        usage = self.probe().usage
        held = sum(len(jobs) for _, jobs, _ in self.stores)
        sample = Sample(self.clock.now, usage, raw_level(usage, self.thresholds), held,
                        self.evicted_since_sample)
        self.evicted_since_sample = 0
        self.samples.append(sample)
        if self.progress is not None:
            self.progress(min(1.0, self.clock.now / (self.config.minutes * 60.0)), sample)

    # -- the result -------------------------------------------------------------------------

    def _result(self, start_usage: int, wall: float) -> StressResult:
        samples = self.samples
        peak = max(samples, key=lambda s: s.usage)
        at_level = dict.fromkeys(LEVELS, 0.0)
        for before, after in zip(samples, samples[1:]):
            at_level[before.level] += after.t - before.t
        jobs = {
            "submitted": self.counts["submitted"],
            "completed": self.counts["completed"],
            "failed": self.counts["failed"],
            "active_lost": len(self.lost),
            "held": samples[-1].jobs,
            "results_read": self.counts["results_read"],
            "poll_misses": self.counts["poll_misses"],
            "return_hits": self.counts["return_hits"],
            "return_misses": self.counts["return_misses"],
            "results_wanted": len(self.wanted),
            "results_lost": len(self.results_lost),
        }
        # Every cleanup that measured a reclaim (periodic passes, emergencies, trims), as the
        # monitor totals them; none in a baseline run.
        reclaimed = 0 if self.monitor is None else int(self.monitor.totals["reclaimed_bytes"])
        config = self.config
        reference = None
        if config.guard:  # a baseline evicts nothing: no floor to compare with
            horizon = config.minutes * 60.0
            reference = clairvoyant(_demands(self.plans, horizon), self.held_peak, bound=True)
        return StressResult(
            guard=config.guard,
            params={
                "seed": config.seed, "minutes": config.minutes, "rate": config.rate,
                "scale": config.scale, "guard": config.guard, "policy": self.policy.source,
                "limit": self.limit, "check_interval": self.policy.memory.check_interval,
                "sample_every": config.sample_every, "python": sys.version.split()[0],
                "unpolled": config.unpolled,
            },
            limit=self.limit,
            thresholds={
                "warning": self.thresholds.warning,
                "emergency": self.thresholds.emergency,
                "emergency_target": self.thresholds.emergency_target,
                "critical": self.thresholds.critical,
            },
            start_usage=start_usage,
            peak_usage=peak.usage,
            peak_at=peak.t,
            final_usage=samples[-1].usage,
            high_water_mark=_high_water_mark(),
            time_at_level=at_level,
            evictions=dict(sorted(self.evictions.items())),
            evicted_bytes=self.evicted_bytes,
            reclaimed_bytes=reclaimed,
            cleanups=len(self.emergencies),
            jobs=jobs,
            samples=tuple(samples),
            wall_seconds=round(wall, 3),
            marks=tuple(self.marks),
            reference=reference,
        )


def _high_water_mark() -> Optional[int]:
    """The process's peak RSS since it started (``ru_maxrss``), in bytes; None if unknown.

    Only meaningful when the run had the process to itself (``memguard stress``, the demo's
    children); the sampled peak is what the verdict uses.
    """
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError):  # pragma: no cover - getrusage always works on Linux
        return None
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def run(config: Optional[StressConfig] = None, *,
        progress: Optional[Progress] = None) -> StressResult:
    """Run the workload once (default: `StressConfig()`) and report what it measured.

    `progress(fraction_done, sample)` is called at every memory sample. Raises ValueError
    when the policy has no numeric memory limit (``limit = "auto"``) and none was given.
    """
    return _Run(config or StressConfig(), progress).execute()
