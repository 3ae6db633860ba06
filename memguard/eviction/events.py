"""What eviction reports: why a job left (`Cause`), one eviction (`EvictionEvent`), and what a
whole cleanup did (`CleanupReport`). Plain values, no behaviour beyond formatting.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Optional

import attrs

from memguard.policy.units import format_size


class Cause(str, enum.Enum):
    """Why a job was evicted."""

    AGE = "age"
    IDLE = "idle"
    COUNT = "count"
    BYTES = "bytes"
    EMERGENCY = "emergency"
    EXPLICIT = "explicit"
    ABANDONED = "abandoned"  # active longer than `max_running` since last written

    def __str__(self) -> str:
        return self.value


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


# Not slotted: attrs builds a frozen class's instance through `__dict__` then, at about half
# the cost of ten `object.__setattr__` calls; a quiet pass's whole cost is mostly this report.
@attrs.frozen(slots=False)
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
        if not self.by_store:  # the commonest report, a pass that evicted nothing
            return 0
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
        """What the cleanup did, e.g. `Cleaned 12 jobs from diagram (age=10 count=2), freed
        ~35.2MB, usage 498.1MB -> 431.7MB`; logged after "Memory cleanup: " (DESIGN section 4;
        capitalised so that the seed's runbook ``grep "Cleaned.*jobs"`` finds it).

        Other kinds than periodic are named in brackets, with an emergency's trigger; "usage"
        is the probe's figure (RSS for the process scope, the container's usage for cgroup).
        """
        stores = ", ".join(
            f"{name} ({' '.join(f'{cause}={n}' for cause, n in sorted(causes.items()))})"
            for name, causes in sorted(self.by_store.items()))
        count = self.evicted
        text = f"Cleaned {count} job{'' if count == 1 else 's'}"
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
