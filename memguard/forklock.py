"""A re-entrant lock that ``fork()`` never hands to the child held by a thread it lacks.

A child process has only the thread that forked; a lock some other thread held at that moment
stays held there for ever. `ForkSafeLock` lets its owner's fork hooks deal with that:
`hold_for_fork` takes the lock before the fork (waiting at most `timeout`, so that work in
progress finishes first; the fork goes ahead regardless), `release_after_fork` lets it go in
the parent, and `renew_after_fork` gives the child a fresh lock. The owner calls these for its
locks in the order its code takes them, which keeps the hooks from deadlocking.
"""

from __future__ import annotations

import threading

__all__ = ["ForkSafeLock"]


class ForkSafeLock:
    """An `threading.RLock` at `.lock`, with the three fork hooks (module docstring).

    Take it as ``with guard.lock:``: the attribute is read once, so the lock released is the
    one taken even when a fork renewed it meanwhile.
    """

    __slots__ = ("_held", "lock")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._held = False

    def hold_for_fork(self, timeout: float) -> None:
        """Before fork: take the lock, waiting up to `timeout` seconds for its holder."""
        self._held = self.lock.acquire(timeout=timeout)

    def release_after_fork(self) -> None:
        """After fork, in the parent: let go of what `hold_for_fork` took."""
        if self._held:
            self._held = False
            self.lock.release()

    def renew_after_fork(self) -> None:
        """After fork, in the child: a fresh lock (a holder may not exist here)."""
        self._held = False
        self.lock = threading.RLock()
