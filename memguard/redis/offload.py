"""Calls to Redis that the monitor's thread waits for only so long.

A frozen Redis (SIGSTOP, a host that drops packets) answers nothing until the socket
timeout; the monitor samples memory on the thread that runs the passes and serves `stats()`,
so those calls run on a daemon thread of their own and are waited for at most a bound.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Optional

from memguard._logging import logger

PENDING: Any = type("Pending", (), {"__repr__": lambda self: "<pending>"})()
"""What `Offloaded.call` returns for a call still running when its wait ends."""


class Offloaded:
    """One call at a time on a daemon thread of its own, waited for at most a bound: what
    keeps a frozen Redis from stalling the monitor. A call made while the previous one is
    still running joins it (`join`: waits for its result, up to the bound) or is not
    started (`PENDING` at once)."""

    def __init__(self, name: str, *, join: bool = False) -> None:
        self.name = name
        self.join = join
        self._lock = threading.Lock()
        #: The call in flight: (its result box, its end), and the pid running it (a forked
        #: child inherits no thread, so a call of its parent's is none of its own).
        self._current: Optional[tuple[dict[str, Any], threading.Event]] = None
        self._current_in = 0

    def call(self, function: Callable[[], Any], wait: float) -> Any:
        """`function()`'s result (or its exception) if it ends within `wait` seconds, else
        `PENDING`, the call going on in the background."""
        start = False
        with self._lock:
            current = self._current if self._current_in == os.getpid() else None
            if current is None:
                current = ({}, threading.Event())
                self._current, self._current_in, start = current, os.getpid(), True
            elif not self.join:
                return PENDING
        box, done = current

        def run() -> None:
            try:
                box["value"] = function()
            except BaseException as error:  # handed to the caller, or logged if it left
                box["error"] = error
            finally:
                with self._lock:
                    self._current = None
                done.set()
                if box.get("late") and "error" in box:
                    logger.warning("memguard: %s failed after its caller stopped waiting: %s",
                                   self.name, box["error"])

        if start:
            threading.Thread(target=run, name=self.name, daemon=True).start()
        if not done.wait(wait):
            box["late"] = True
            return PENDING
        if "error" in box:
            raise box["error"]
        return box["value"]
