"""The daemon loop every background thread runs on, the fork-safe lock and worker recycling."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final, Optional

from memguard._logging import announce, logger

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


class ForkLocks:
    """The locks a fork must not leave held, in the order the code takes them.

    Before a fork each is taken (waiting a bounded time for a tick or cleanup in progress),
    so the child never inherits one held by a thread that does not exist there; after it
    the parent lets go of them in reverse order, and the child gets fresh ones.
    """

    __slots__ = ("guards",)

    def __init__(self, *guards: ForkSafeLock) -> None:
        self.guards = guards

    def hold(self, timeout: float) -> None:
        for guard in self.guards:
            guard.hold_for_fork(timeout)

    def release(self) -> None:
        for guard in reversed(self.guards):
            guard.release_after_fork()

    def renew(self) -> None:
        for guard in self.guards:
            guard.renew_after_fork()


class Recycler:
    """The recycle requests of one monitor. `hook()` is the hook now (None: no integration
    installed one), `active()` the number of active jobs in all stores."""

    def __init__(self, hook: Callable[[], Optional[Callable[[], None]]],
                 active: Callable[[], int]) -> None:
        self._hook = hook
        self._active = active
        self.requested = False  # asked (or said there is no hook) since reaching critical
        self.refused = False  # said that active jobs hold it back, since reaching critical

    def due(self, level: str, enabled: bool) -> bool:
        """Whether to ask now: at critical, when the policy enables it, not asked yet."""
        return level == "critical" and enabled and not self.requested

    def level_changed(self, level: str) -> None:
        """Below critical again: the next time it gets there, ask again."""
        if level != "critical":
            self.requested = self.refused = False

    def recycle(self) -> bool:
        """Ask the server to replace this worker, unless that would lose active jobs; True
        when the hook was called."""
        hook = self._hook()
        if hook is None:
            self.requested = True
            logger.critical(
                "memguard: recycle = true but no server integration installed a recycle hook; "
                "nothing to ask (memguard never kills the process)"
            )
            return False
        active = self._active()
        if active:
            if not self.refused:
                self.refused = True
                logger.critical("memguard: memory critical, but not recycling this worker: "
                                "%d active job(s) would be lost; asking again once they finish",
                                active)
            return False
        self.requested = True
        logger.critical("memguard: memory critical: asking the server to recycle this worker")
        hook()
        return True
