"""The eviction pipeline: an immutable tuple of rules run by one loop, and what it reports."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Optional

import attrs

from memguard._units import format_size
from memguard.rules import (
    Cause,
    Emergency,
    Eviction,
    MaxAge,
    MaxBytes,
    MaxIdle,
    MaxJobs,
    Pass,
    Rule,
)
from memguard.tracking import JobIndex

if TYPE_CHECKING:
    from memguard.policy import StorePolicy
    from memguard.store import StoreHandle

logger = logging.getLogger("memguard")


@attrs.frozen
class EvictionEvent:
    """One job left a store: which store, which key, why, and its estimated size in bytes."""

    store: str
    key: Hashable
    cause: Cause
    size: Optional[int]

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "key": str(self.key), "cause": self.cause.value,
                "size": self.size}


@attrs.frozen
class Pipeline:
    """Rules run in order by `run`; `a | b` appends, a plain callable stands in for a rule."""

    rules: tuple[Rule, ...] = ()

    def __or__(self, other: Any) -> Pipeline:
        added = other.rules if isinstance(other, Pipeline) else (other,)
        return Pipeline(self.rules + tuple(added))

    def __ror__(self, other: Any) -> Pipeline:
        return Pipeline((other,)) | self

    def __call__(self, index: JobIndex, ctx: Pass) -> Iterator[Eviction]:
        for rule in self.rules:
            yield from rule(index, ctx)

    @staticmethod
    def _apply(rule: Rule, store: StoreHandle, ctx: Pass, evicted: list[Any]) -> None:
        """Evict what `rule` names, lock held. Whatever a rule says, an active job stays (user
        rules included); a rule that names a job it was refused again is stopped, so a rule
        that keeps asking for the same running job cannot hold the lock forever."""
        index = store.index
        refused: set[Any] = set()
        for key, cause in rule(index, ctx):
            if not index.evictable(key):
                if key in refused:
                    logger.warning("memguard: rule %r keeps naming job %r, which is active or "
                                   "gone, in store %s; stopping it for this pass",
                                   rule, key, store.name)
                    return
                refused.add(key)
                continue
            victim = store.evict_locked(key, cause)
            if victim is not None:
                evicted.append(victim)
                if ctx.budget is not None:
                    ctx.budget.remaining -= victim.size or 0

    def run(self, store: StoreHandle, ctx: Pass) -> list[EvictionEvent]:
        """One pass over `store`: evict what the rules name, then notify outside the lock."""
        evicted: list[Any] = []
        with store.lock:
            store.prepare_pass(ctx)
            for rule in self.rules:
                try:
                    self._apply(rule, store, ctx, evicted)
                except Exception:
                    logger.exception("memguard: rule %r failed on store %s", rule, store.name)
        return store.finish_evictions(evicted)


def pipeline_for(policy: StorePolicy, rule_names: Iterable[str] = ("age", "idle", "count",
                 "bytes", "emergency"), *, emergency_order: Optional[str] = None) -> Pipeline:
    """The pipeline a store's policy asks for, keeping only the named rules, in pass order."""
    names = set(rule_names)
    rules: list[Rule] = []
    if "age" in names and policy.max_age is not None:
        rules.append(MaxAge(policy.max_age))
    if "idle" in names and policy.max_idle is not None:
        rules.append(MaxIdle(policy.max_idle))
    if "count" in names and policy.max_jobs is not None:
        rules.append(MaxJobs(policy.max_jobs))
    if "bytes" in names and policy.max_bytes is not None:
        rules.append(MaxBytes(policy.max_bytes))
    if "emergency" in names:
        rules.append(Emergency(emergency_order))
    return Pipeline(tuple(rules))


@attrs.frozen
class CleanupReport:
    """What one cleanup did: evictions per store and cause, bytes freed, usage before/after."""

    kind: str
    by_store: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)
    freed_estimate: int = 0
    started_at: float = 0.0
    duration: float = 0.0
    usage_before: Optional[int] = None
    usage_after: Optional[int] = None
    note: str = ""
    trigger: str = ""
    """Why an emergency cleanup ran: threshold, predicted, critical, signal or forced."""
    rounds: int = 0
    """How many evict-reclaim-sample rounds an emergency cleanup took."""

    @classmethod
    def from_events(cls, kind: str, events: Iterable[EvictionEvent],
                    **fields: Any) -> CleanupReport:
        by_store: dict[str, Counter[str]] = {}
        freed = 0
        for event in events:
            by_store.setdefault(event.store, Counter())[event.cause.value] += 1
            freed += event.size or 0
        counts = {name: dict(causes) for name, causes in by_store.items()}
        return cls(kind, counts, freed, **fields)

    @property
    def evicted(self) -> int:
        return sum(sum(causes.values()) for causes in self.by_store.values())

    @property
    def by_cause(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for causes in self.by_store.values():
            total.update(causes)
        return dict(total)

    @property
    def reclaimed(self) -> Optional[int]:
        """Bytes the process (or container) gave back, measured, when both samples exist."""
        if self.usage_before is None or self.usage_after is None:
            return None
        return self.usage_before - self.usage_after

    def summary(self) -> str:
        """What the cleanup did, e.g. `cleaned 12 jobs from diagram (age=10 count=2), freed
        ~35.2MB, usage 498.1MB -> 431.7MB`; logged after "Memory cleanup: " (DESIGN section 4).

        Other kinds than periodic are named in brackets, with an emergency's trigger; "usage"
        is the probe's figure (RSS for the process scope, the container's usage for cgroup).
        """
        stores = ", ".join(
            f"{name} ({' '.join(f'{cause}={n}' for cause, n in sorted(causes.items()))})"
            for name, causes in sorted(self.by_store.items()))
        count = self.evicted
        text = f"cleaned {count} job{'' if count == 1 else 's'}"
        text += f" from {stores}" if stores else ""
        if self.kind != "periodic":
            text += f" [{self.kind}: {self.trigger}]" if self.trigger else f" [{self.kind}]"
        text += f", freed ~{format_size(self.freed_estimate)}"
        if self.usage_before is not None and self.usage_after is not None:
            text += f", usage {format_size(self.usage_before)} -> {format_size(self.usage_after)}"
        if self.note:
            text += f"; {self.note}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "evicted": self.evicted,
            "by_cause": self.by_cause,
            "by_store": {name: dict(causes) for name, causes in self.by_store.items()},
            "freed_estimate_bytes": self.freed_estimate,
            "usage_before_bytes": self.usage_before,
            "usage_after_bytes": self.usage_after,
            "reclaimed_bytes": self.reclaimed,
            "started_at": self.started_at,
            "duration_seconds": self.duration,
            "note": self.note,
            "trigger": self.trigger,
            "rounds": self.rounds,
        }


__all__ = ["CleanupReport", "EvictionEvent", "Pipeline", "pipeline_for"]
