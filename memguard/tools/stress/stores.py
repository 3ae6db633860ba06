"""The stores of a run, declared afresh per run."""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any, Callable, Optional

from memguard.manager import MemoryManager
from memguard.stores.managed import managed_store
from memguard.stores.touches import touches
from memguard.tools.stress.config import StoreProfile


class _PlainJobStore:
    """How the seed held some stores: an object with a ``jobs`` dict and an accessor."""

    def __init__(self) -> None:
        self.jobs: dict[str, Any] = {}

    def get_job(self, job_id: str) -> Optional[dict[str, Any]]:
        return self.jobs.get(job_id)


_Bound = tuple[Any, MutableMapping[str, Any], Callable[[str], Optional[dict[str, Any]]]]
"""A store of a run: the store object, the mapping holding its jobs, its read accessor."""


def _build_stores(profiles: Iterable[StoreProfile],
                  manager: Optional[MemoryManager]) -> list[_Bound]:
    """(store, its job mapping, its read accessor) per profile; managed when `manager` is set.

    Each guarded run declares fresh classes bound to its own manager, so runs never share a
    registry, and the classes go away with the run.
    """
    out: list[_Bound] = []
    for profile in profiles:
        store: Any
        if profile.accessor == "attr":
            if manager is None:
                store = _PlainJobStore()
            else:
                @managed_store(name=profile.name, mapping="jobs", manager=manager)
                class AttrJobStore:
                    def __init__(self) -> None:
                        self.jobs: dict[str, Any] = {}

                    @touches
                    def get_job(self, job_id: str) -> Optional[dict[str, Any]]:
                        return self.jobs.get(job_id)

                store = AttrJobStore()
            out.append((store, store.jobs, store.get_job))
        else:
            if manager is None:
                store = {}
            else:
                @managed_store(name=profile.name, manager=manager)
                class DictJobStore(dict):  # type: ignore[type-arg]
                    pass

                store = DictJobStore()
            out.append((store, store, store.get))
    return out
