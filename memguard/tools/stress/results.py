"""What a stress run measured, and its verdict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import attrs

from memguard.policy.units import format_size
from memguard.tools.reference import ReferenceOutcome, gap, reference_line


@attrs.frozen
class Sample:
    """One memory reading during a run: simulated seconds, bytes used, level, jobs held, and
    jobs evicted (by any rule, at insert or in a cleanup) since the previous reading."""

    t: float
    usage: int
    level: str
    jobs: int
    evicted: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the fields."""
        return {"t": self.t, "usage": self.usage, "level": self.level, "jobs": self.jobs,
                "evicted": self.evicted}


@attrs.frozen
class Mark:
    """A cleanup during a guarded run, for charts: simulated seconds, its kind (``periodic`` or
    ``emergency``), the jobs it evicted and what it measurably reclaimed (None: not measured)."""

    t: float
    kind: str
    evicted: int
    reclaimed: Optional[int]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the fields."""
        return {"t": self.t, "kind": self.kind, "evicted": self.evicted,
                "reclaimed": self.reclaimed}


@attrs.frozen
class StressResult:
    """What a run measured. Sizes in bytes, times in simulated seconds unless named `wall`.

    `passed` is the verdict: the peak stayed under the limit and no active job was lost; the
    verdict line also gives `results_lost`, the finished results evicted before a client came
    back for them, out of `results_wanted`, those a client came back for: a later visit, or
    a poll that found the job finished and already evicted (a result read at the poll that
    saw it finish was delivered, and counts in neither).
    `jobs` counts ``submitted``, ``completed``, ``failed``, ``active_lost`` (pending or
    running jobs that disappeared: must be 0), ``held`` (in the stores at the end),
    ``results_read`` (clients that polled until done and read the result), ``poll_misses``
    (a polling client found its job gone: it finished and was evicted before the next poll),
    ``return_hits`` / ``return_misses`` (clients coming back later found their job, or found
    it cleaned up), ``results_wanted`` / ``results_lost`` (finished jobs a client came back
    for, and those of them a client found evicted). `evictions` counts by cause,
    `evicted_bytes` is the estimated size of what was evicted, `reclaimed_bytes` what cleanups
    (periodic passes and emergencies alike) measurably gave back to the system, `cleanups` the
    number of emergency cleanups, `marks` every cleanup that evicted something or was an
    emergency, and `time_at_level` the simulated seconds spent at each level.
    """

    guard: bool
    params: Mapping[str, Any]
    limit: int
    thresholds: Mapping[str, Optional[int]]
    start_usage: int
    peak_usage: int
    peak_at: float
    final_usage: int
    high_water_mark: Optional[int]
    time_at_level: Mapping[str, float]
    evictions: Mapping[str, int]
    evicted_bytes: int
    reclaimed_bytes: int
    cleanups: int
    jobs: Mapping[str, int]
    samples: tuple[Sample, ...]
    wall_seconds: float
    marks: tuple[Mark, ...] = ()
    #: The clairvoyant reference (`memguard.tools.reference`) on the same traffic, given as
    #: many bytes of results as this run held at its peak; None for a baseline.
    reference: Optional[ReferenceOutcome] = None

    @property
    def reference_gap(self) -> Optional[float]:
        """Points between this run's lost share and the reference's (None: no figure)."""
        if self.reference is None:
            return None
        return gap(self.lost_share, self.reference)

    @property
    def results_lost(self) -> int:
        """Finished results a client came back for and found evicted (one per job)."""
        return self.jobs.get("results_lost", 0)

    @property
    def results_wanted(self) -> int:
        """Finished results a client came back for at least once (one per job)."""
        return self.jobs.get("results_wanted", 0)

    @property
    def lost_share(self) -> Optional[float]:
        """`results_lost` / `results_wanted`; None when no client came back for a result."""
        return self.results_lost / self.results_wanted if self.results_wanted else None

    def lost_text(self) -> str:
        """``84 of 318 results lost before their client came back (26%)``."""
        share = "" if self.lost_share is None else f" ({self.lost_share:.0%})"
        return (f"{self.results_lost} of {self.results_wanted} results lost before their "
                f"client came back{share}")

    @property
    def active_lost(self) -> int:
        """Pending or running jobs that disappeared from a store (a guarded run must show 0)."""
        return self.jobs.get("active_lost", 0)

    @property
    def under_limit(self) -> bool:
        """The highest sampled usage stayed below the limit."""
        return self.peak_usage < self.limit

    @property
    def passed(self) -> bool:
        """The verdict: under the limit at every sample, and no active job lost."""
        return self.under_limit and self.active_lost == 0

    def verdict(self) -> str:
        """One line for people: what happened against the limit."""
        peak = f"peak {format_size(self.peak_usage)} of {format_size(self.limit)} limit"
        name = "guarded" if self.guard else "baseline (no guard)"
        floor = ("" if self.reference is None
                 else "; " + reference_line(self.lost_share, self.reference))
        if self.passed:
            return (f"PASS {name}: {peak}, {self.active_lost} active jobs lost, "
                    f"{self.lost_text()}{floor}")
        reasons = []
        if not self.under_limit:
            over = next((s for s in self.samples if s.usage >= self.limit), None)
            when = f" from minute {over.t / 60:.0f}" if over is not None else ""
            reasons.append(f"{peak}: over the limit{when}")
        if self.active_lost:
            reasons.append(f"{self.active_lost} active jobs lost")
        return f"FAIL {name}: " + "; ".join(reasons) + f"; {self.lost_text()}{floor}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: every field, the samples as a list of dicts, and the verdict."""
        return {
            "guard": self.guard,
            "passed": self.passed,
            "verdict": self.verdict(),
            "params": dict(self.params),
            "limit": self.limit,
            "thresholds": dict(self.thresholds),
            "start_usage": self.start_usage,
            "peak_usage": self.peak_usage,
            "peak_at": self.peak_at,
            "final_usage": self.final_usage,
            "high_water_mark": self.high_water_mark,
            "time_at_level": dict(self.time_at_level),
            "evictions": dict(self.evictions),
            "evicted_bytes": self.evicted_bytes,
            "reclaimed_bytes": self.reclaimed_bytes,
            "cleanups": self.cleanups,
            "jobs": dict(self.jobs),
            "results_lost": self.results_lost,
            "results_wanted": self.results_wanted,
            "lost_share": self.lost_share,
            "reference": None if self.reference is None else self.reference.to_dict(),
            "reference_gap": self.reference_gap,
            "samples": [sample.to_dict() for sample in self.samples],
            "marks": [mark.to_dict() for mark in self.marks],
            "wall_seconds": self.wall_seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StressResult:
        """Rebuild a result from `to_dict()` output (the demo reads its children's JSON)."""
        return cls(
            guard=bool(data["guard"]),
            params=dict(data["params"]),
            limit=int(data["limit"]),
            thresholds=dict(data["thresholds"]),
            start_usage=int(data["start_usage"]),
            peak_usage=int(data["peak_usage"]),
            peak_at=float(data["peak_at"]),
            final_usage=int(data["final_usage"]),
            high_water_mark=data.get("high_water_mark"),
            time_at_level={k: float(v) for k, v in data["time_at_level"].items()},
            evictions={k: int(v) for k, v in data["evictions"].items()},
            evicted_bytes=int(data["evicted_bytes"]),
            reclaimed_bytes=int(data["reclaimed_bytes"]),
            cleanups=int(data["cleanups"]),
            jobs={k: int(v) for k, v in data["jobs"].items()},
            samples=tuple(Sample(float(s["t"]), int(s["usage"]), str(s["level"]), int(s["jobs"]),
                                 int(s.get("evicted", 0)))
                          for s in data["samples"]),
            wall_seconds=float(data["wall_seconds"]),
            marks=tuple(Mark(float(m["t"]), str(m["kind"]), int(m["evicted"]),
                             None if m.get("reclaimed") is None else int(m["reclaimed"]))
                        for m in data.get("marks", ())),
            reference=(None if data.get("reference") is None
                       else ReferenceOutcome.from_dict(data["reference"])),
        )
