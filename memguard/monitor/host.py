"""`MonitorHost`: what the monitor needs of the manager that runs it.

The monitor reaches its manager only through this protocol, so nothing in `memguard.monitor`
imports `memguard.manager`, not even for type hints (DESIGN section 1): the manager sits above
the monitor, owns it, and hands itself in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Callable, Optional, Protocol, Union

from memguard.eviction.events import CleanupReport, EvictionEvent
from memguard.memory.reclaim import Reclaim
from memguard.memory.samples import MemorySample
from memguard.policy.policy import Policy
from memguard.stores.intake import Intake
from memguard.stores.protocol import StoreHandle


class MonitorHost(Protocol):
    """The manager as the monitor sees it: clock, probe, policy, stores and the cleanups."""

    clock: Callable[[], float]
    probe: Optional[Callable[[], MemorySample]]
    reclaim: Callable[..., Reclaim]
    """Gives memory back to the OS (gc and the allocator's trim); injected like the clock."""
    evicted_bytes: int
    intake: Intake
    """Inserts counted by the stores; the monitor arms it at each sample to be woken early."""
    """Bytes evicted from this process's stores so far (the cue to give memory back)."""

    @property
    def policy(self) -> Policy: ...

    @property
    def stores(self) -> Mapping[str, tuple[StoreHandle, ...]]: ...

    def handles(self) -> Sequence[StoreHandle]: ...

    def evict_bytes(self, amount: int, *, kind: str = "emergency") -> list[EvictionEvent]: ...

    def run_cleanup(self) -> CleanupReport: ...

    def notice_finished(self) -> None: ...

    def emergency_cleanup(self) -> CleanupReport: ...

    def load_policy(self, path_or_policy: Union[str, Path, Policy]) -> Policy: ...
