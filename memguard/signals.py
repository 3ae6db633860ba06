"""SIGUSR1 as a manual cleanup trigger, when the policy asks for it (``signal_cleanup``).

Installed only from the main thread (the only one allowed to) and only over ``SIG_DFL``: a
handler the app server owns (gunicorn's workers reopen their logs on SIGUSR1) is never
replaced. The handler only sets a flag the monitor thread polls; it takes no lock and does no
I/O, since it runs between two bytecodes of the main thread, which may hold any lock then.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Optional

from memguard._logging import logger

__all__ = ["SignalTrigger"]

Handler = Callable[[int, Optional[FrameType]], None]


class SignalTrigger:
    """One process's SIGUSR1 handler for one monitor. `wanted()` says whether memguard still
    wants the signal; `pending` is set by the handler and taken by the monitor thread."""

    def __init__(self, wanted: Callable[[], bool]) -> None:
        self.wanted = wanted
        self.pending = False
        self.handler: Optional[Handler] = None

    @property
    def installed(self) -> bool:
        return self.handler is not None

    def take(self) -> bool:
        """Whether a signal arrived since the last call."""
        if not self.pending:
            return False
        self.pending = False
        return True

    def on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        """Set the flag. If memguard no longer wants the signal (stopped, or signal_cleanup
        turned off from a thread that could not put the default back), restore the default
        action and deliver the signal again, so it is never swallowed."""
        if not self.wanted():
            self.handler = None
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.pending = True

    def update(self) -> bool:
        """Install or remove the handler as `wanted()` says; True when newly installed."""
        if self.wanted():
            return self.install()
        self.remove()
        return False

    def install(self) -> bool:
        """Install the handler when allowed: main thread, and SIGUSR1 at SIG_DFL."""
        if self.handler is not None or not hasattr(signal, "SIGUSR1"):
            return False
        if threading.current_thread() is not threading.main_thread():
            logger.warning("memguard: signal_cleanup: not installing a SIGUSR1 handler "
                           "(only the main thread can; start the monitor there)")
            return False
        current = signal.getsignal(signal.SIGUSR1)
        if current is not signal.SIG_DFL:
            logger.warning("memguard: signal_cleanup: SIGUSR1 already has a handler (%r); "
                           "leaving it to its owner", current)
            return False
        handler = self.on_signal
        signal.signal(signal.SIGUSR1, handler)
        self.handler = handler
        logger.info("memguard: SIGUSR1 triggers an emergency cleanup (pid %d)", os.getpid())
        return True

    def remove(self) -> None:
        """Put SIG_DFL back, if our handler is still the installed one. From another thread
        this cannot be done; the handler then restores the default itself (`on_signal`)."""
        handler = self.handler
        if handler is None or threading.current_thread() is not threading.main_thread():
            return
        self.handler = None
        if signal.getsignal(signal.SIGUSR1) == handler:
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
