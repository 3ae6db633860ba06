"""The monitor's thread: a daemon loop that steps, waits, and never dies for good.

`DaemonLoop` calls `step()`, then waits `interval()` seconds on an event that `wake()` sets
(a new interval, a stop, a faster pace); when `polling()` says so it waits in short slices
and ends early once `interrupted()` (a signal handler's flag, which it cannot take a lock to
report). Anything a step raises is counted and logged, `BaseException` included; should the
loop end without a stop anyway, it starts a fresh thread (at most `MAX_RESTARTS` times). After
a fork, `relaunch()` starts the thread again in the child.

The monitor, the policy watcher (`memguard.reload`) and the cleanup listener
(`memguard.trigger`) each run on one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final, Optional

from memguard._logging import announce, logger

__all__ = ["MAX_RESTARTS", "DaemonLoop"]

MAX_RESTARTS: Final = 10
"""How many times a loop that ended without a stop is started again before giving up."""

POLL_SLICE: Final = 0.25
"""While polling, the wait is cut into slices this long (seconds)."""


class DaemonLoop:
    """One daemon thread running `step` every `interval()` seconds until stopped.

    `name` names the thread; `title` and `consequence` word the lines that say it died
    ("<title> thread died; restarting it", "<title> died N times; not restarting it
    (<consequence>)").
    """

    def __init__(self, name: str, *, step: Callable[[], object],
                 interval: Callable[[], float],
                 polling: Callable[[], bool] = lambda: False,
                 interrupted: Callable[[], bool] = lambda: False,
                 on_failure: Callable[[], object] = lambda: None,
                 title: str = "Memory monitor",
                 consequence: str = "/health/live now fails") -> None:
        self.name = name
        self.title = title
        self.consequence = consequence
        self.step = step
        self.interval = interval
        self.polling = polling
        self.interrupted = interrupted
        self.on_failure = on_failure
        self.restarts = 0
        self.thread: Optional[threading.Thread] = None
        self.stop_event = threading.Event()
        self.wake_event = threading.Event()
        self.wanted = False  # True from start() to stop(): the loop is meant to run

    @property
    def running(self) -> bool:
        thread = self.thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the thread unless it runs (a stop that timed out mid-step: start afresh)."""
        self.wanted = True
        if self.running and not self.stop_event.is_set():
            return
        self.launch()

    def launch(self) -> None:
        """A fresh thread with its own stop event (the old one, if any, ends on its own)."""
        self.stop_event = stop = threading.Event()
        self.wake_event = threading.Event()
        thread = threading.Thread(target=self._run, args=(stop,), name=self.name, daemon=True)
        self.thread = thread
        thread.start()

    def wake(self) -> None:
        """End the current wait now (a new interval, a faster pace, a stop)."""
        self.wake_event.set()

    def stop(self, timeout: Optional[float] = 5.0) -> bool:
        """Ask the thread to end and wait up to `timeout` for it; True once it has ended.
        From the thread itself (a callback) it only asks."""
        self.ask_stop()
        thread = self.thread
        if thread is None:
            return True
        if thread is threading.current_thread():
            return False
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("memguard: the %s thread did not stop within %ss", self.name,
                           timeout)
            return False
        if self.thread is thread:
            self.thread = None
        return True

    def ask_stop(self) -> None:
        """Ask the thread to end after its current step, without waiting for it."""
        self.wanted = False
        self.stop_event.set()
        self.wake_event.set()

    def after_fork_in_child(self) -> bool:
        """In a forked child: forget the parent's thread (it does not exist here). Returns
        whether the loop was meant to run, for an owner that starts it again its own way."""
        was_running = self.wanted and self.thread is not None
        self.thread = None
        return was_running

    def relaunch(self) -> None:
        """In a forked child: start again if the parent's loop was meant to run (the thread
        itself did not survive the fork)."""
        if self.after_fork_in_child():
            try:
                self.launch()
            except Exception:
                logger.exception("memguard: could not restart the %s thread after fork",
                                 self.name)

    def _run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self.step()
                except BaseException:  # the step guards itself; this is the last defence
                    self.on_failure()
                    logger.exception("memguard: a %s step failed; carrying on", self.name)
                if stop.is_set():
                    break
                self.wait(stop)
        except BaseException:
            self.on_failure()
            logger.exception("memguard: the %s loop ended on an exception", self.name)
        finally:
            if not stop.is_set() and self.wanted:
                self._restart()

    def _restart(self) -> None:
        if self.restarts >= MAX_RESTARTS:
            announce(logging.CRITICAL, "%s died %d times; not restarting it (%s)", self.title,
                     self.restarts, self.consequence)
            return
        self.restarts += 1
        announce(logging.ERROR, "%s thread died; restarting it (%d)", self.title, self.restarts)
        try:
            self.launch()
        except BaseException:
            logger.exception("memguard: could not restart the %s thread", self.name)

    def wait(self, stop: threading.Event) -> None:
        """Wait one interval, or less when woken or interrupted."""
        wake = self.wake_event
        seconds = self.interval()
        if not self.polling():
            wake.wait(seconds)
        else:  # poll a flag that its setter could not report through the event
            slices = max(1, int(seconds / POLL_SLICE + 0.999))
            for _ in range(slices):
                if wake.wait(seconds / slices) or self.interrupted() or stop.is_set():
                    break
        wake.clear()
