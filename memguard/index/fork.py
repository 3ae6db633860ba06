"""Fork safety of the store indexes (see memguard.index.base).

Every live index is known (weakly) here, so a child forked while another thread held a store
lock gets a fresh lock instead of one nobody will ever release (`_before_fork` quiesces the
writers first), and an index another thread was changing at the fork is repaired in the child
(`ForkRepair.repair_after_fork`).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from typing import Any

from memguard._logging import logger
from memguard.index.base import NOTHING, IndexBase
from memguard.index.marks import Epoch


class ForkRepair(IndexBase):
    """The repair of an index left half changed by a fork."""

    __slots__ = ()

    def repair_after_fork(self) -> None:
        """Make the index consistent again in a forked child whose parent had another thread
        inside a change of it (holding the lock longer than the fork waits: a slow size
        function, predicate, rule or store method).

        `created` is the truth (a write sets it first, a removal drops it first); the rest is
        brought in line with it without calling the store's predicate or size function (this
        runs inside `os.fork()`):

        - the job an insert was writing is no longer protected as such;
        - entries of jobs no longer created go; a job in no order goes back at the recent end
          of both; epoch markers left half laid or half dropped go;
        - a job of unknown size that nobody is to weigh (the thread was in the size function
          or the predicate) is marked unweighed and known active: the next re-check (an insert
          over a bound, a pass) asks the predicate and weighs it;
        - the byte total and the pinned count are summed again; the largest-first heap goes
          (rebuilt when next asked for);
        - `resync` is set: the store compares its keys with the index at its next pass (the
          thread may have been inside the store's own write method).

        Reads being drained at the fork are lost (their jobs keep their place); evictions the
        thread had made but not yet finished are neither released nor reported in the child
        (the parent finishes them). Pins stay: the child cannot tell which thread took them.
        """
        self.writing = NOTHING
        created, orders, unweighed = self.created, self.orders, self.unweighed
        lru, aged, parked = orders.lru, orders.aged, orders.parked
        for table in (lru, aged, parked, orders.delivered, orders.finished, unweighed,
                      self.failed, self.known_active):
            for key in [k for k in table if not isinstance(k, Epoch) and k not in created]:
                del table[key]
        laid = set(orders.epochs)
        for marker in [k for k in lru if isinstance(k, Epoch) and k not in laid]:
            del lru[marker]
        orders.epochs = deque(marker for marker in orders.epochs if marker in lru)
        total = 0
        for key in created:
            if key in parked:
                size = lru.pop(key, None)
                if parked[key] is None and size is not None:
                    parked[key] = size
                aged.pop(key, None)
                size = parked[key]
            else:
                size = lru.setdefault(key, None)
                aged.setdefault(key, None)
            if size is None:
                unweighed[key] = None
            else:
                total += size
            if key in unweighed:
                self.activity.mark(key)
        self.activity.rotation = deque(self.known_active)
        self.total_bytes = total
        self.pin_table.jobs = sum(1 for key in self.pins if key in created)
        orders.largest = None
        self.resync = True


live_indexes: weakref.WeakSet[ForkRepair] = weakref.WeakSet()
#: How long a fork waits, at most, for the store locks other threads hold.
FORK_QUIESCE_SECONDS = 1.0
_held_for_fork: list[Any] = []


def _snapshot() -> list[ForkRepair]:
    """The live indexes (a store created by another thread meanwhile may make one copy fail
    with "changed size during iteration": try again)."""
    for _ in range(100):
        try:
            return list(live_indexes)
        except RuntimeError:
            continue
    return []


#: The indexes whose lock another thread still held when the fork went ahead (weakly: an
#: index that dies meanwhile drops out).
_torn_at_fork: weakref.WeakSet[ForkRepair] = weakref.WeakSet()


def _before_fork() -> None:
    """Quiesce writers: take every store lock (waiting at most FORK_QUIESCE_SECONDS in all),
    so the child starts from indexes no thread was in the middle of changing. An index whose
    lock stays held (slow work under it: a size function, a predicate, a rule) is noted, and
    the child repairs it (`_after_fork_in_child`)."""
    deadline = time.monotonic() + FORK_QUIESCE_SECONDS
    _torn_at_fork.clear()
    for index in _snapshot():
        lock = index.lock
        if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            _held_for_fork.append(lock)
        else:
            _torn_at_fork.add(index)


def _after_fork_in_parent() -> None:
    _torn_at_fork.clear()
    while _held_for_fork:
        _held_for_fork.pop().release()


def _after_fork_in_child() -> None:
    """Every store lock is new in the child: a lock another thread held at the fork can never
    be released there (that thread does not exist in the child). An index that thread was
    changing is repaired (`ForkRepair.repair_after_fork`): no user code runs here."""
    _held_for_fork.clear()  # the old locks stay held by nobody; nothing uses them again
    torn = list(_torn_at_fork)
    _torn_at_fork.clear()
    for index in _snapshot():
        index.lock = threading.RLock()
    for index in torn:
        try:
            index.repair_after_fork()
        except Exception:  # never fail a fork: the index stays as the parent left it
            logger.exception("memguard: could not repair a store index after fork")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
