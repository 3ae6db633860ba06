"""A store whose `active` predicate counts its calls: how tests see that a path asks it
nothing (the index's re-checks, the HTTP endpoints)."""

from __future__ import annotations

from typing import Any

from memguard import MemoryManager, managed_store


class Counting:
    """The default active predicate (a `status` of queued/running...), counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, job: Any) -> bool:
        self.calls += 1
        return job.get("status") in ("queued", "running")


def counted_store(manager: MemoryManager, **options: Any) -> tuple[Any, Counting]:
    active = Counting()

    @managed_store(manager=manager, active=active, **options)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    return Jobs(), active
