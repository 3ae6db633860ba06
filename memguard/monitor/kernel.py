"""Kernel memory notifications that wake the monitor early (DESIGN section 4, "Bursts").

Where the probe reads a cgroup v1 memory controller whose ``cgroup.event_control`` this
process may write, `KernelWake` registers memory thresholds there (an eventfd and
``memory.usage_in_bytes``: the kernel signals the eventfd whenever usage crosses one, either
way) at the policy's ``warning``, ``emergency`` and ``critical``, and a small daemon thread
``memguard-kernel`` waits on it and wakes the monitor. It catches memory allocated outside the
stores, which the stores' own wake-ups (`memguard.stores.intake`) cannot see. The kernel
compares its raw ``usage_in_bytes`` (page cache included), never below memguard's usage, so
it fires at or before memguard's usage crosses a threshold: at worst an extra sample.

Not used with cgroup v2 (a PSI trigger on ``memory.pressure`` signals reclaim stalls, not a
level; left for later), with the process scope, or when the file is not writable.
"""

from __future__ import annotations

import os
import select
import threading
from typing import Callable, Optional

from memguard._logging import logger
from memguard.memory.probes import CgroupProbe
from memguard.policy.thresholds import Thresholds

THREAD_NAME = "memguard-kernel"


class KernelWake:
    """One monitor's cgroup v1 thresholds and the thread that waits on them.

    `ensure(probe, thresholds)` (each tick) registers the thresholds when they or the cgroup
    changed, or after a fork; `close()` ends it. `fired` counts the notifications.
    """

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._key: Optional[tuple[str, tuple[int, ...]]] = None
        self._pid = os.getpid()
        self._fds: list[int] = []
        self._stop_w: Optional[int] = None
        self._thread: Optional[threading.Thread] = None
        self._failed = False
        self.fired = 0

    @property
    def armed(self) -> bool:
        """Whether thresholds are registered and the thread waits on them."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def ensure(self, probe: object, thresholds: Thresholds) -> None:
        """Register `thresholds` for `probe`'s cgroup unless they already are."""
        if self._pid != os.getpid():  # a forked child: the parent's thread is not here
            self._pid, self._thread, self._key, self._failed = os.getpid(), None, None, False
            self._close_fds()
        if (not isinstance(probe, CgroupProbe) or probe.version != 1 or self._failed
                or not hasattr(os, "eventfd")):  # Linux, Python 3.10+
            if self._key is not None:
                self.close()
            return
        levels = tuple(sorted({t for t in (thresholds.warning, thresholds.emergency,
                                           thresholds.critical) if t is not None}))
        key = (str(probe.path), levels)
        if key == self._key and self.armed:
            return
        self.close()
        if not levels:
            return
        try:
            self._register(probe.path.as_posix(), levels)
        except OSError as error:  # not writable, no eventfd: say so once, sample as before
            self._failed = True
            self._close_fds()
            logger.debug("memguard: no cgroup v1 memory thresholds (%s); the monitor samples "
                         "at its interval and on the stores' wake-ups", error)
            return
        self._key = key

    def _register(self, path: str, levels: tuple[int, ...]) -> None:
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._fds.append(efd)
        usage = os.open(os.path.join(path, "memory.usage_in_bytes"), os.O_RDONLY | os.O_CLOEXEC)
        self._fds.append(usage)
        control = os.open(os.path.join(path, "cgroup.event_control"), os.O_WRONLY | os.O_CLOEXEC)
        try:
            for level in levels:
                os.write(control, f"{efd} {usage} {level}".encode())
        finally:
            os.close(control)
        stop_r, stop_w = os.pipe()
        self._fds.append(stop_r)
        self._stop_w = stop_w
        self._thread = threading.Thread(target=self._run, args=(efd, stop_r), daemon=True,
                                        name=THREAD_NAME)
        self._thread.start()

    def _run(self, efd: int, stop_r: int) -> None:
        try:
            while True:
                ready, _, _ = select.select([efd, stop_r], [], [])
                if stop_r in ready:
                    return
                try:
                    os.eventfd_read(efd)
                except BlockingIOError:
                    continue
                self.fired += 1
                self._wake()
        except (OSError, ValueError):  # fds closed under us (close after a fork): end
            return

    def close(self) -> None:
        """Unregister (closing the eventfd removes the thresholds) and end the thread."""
        thread, stop_w = self._thread, self._stop_w
        self._thread = self._stop_w = None
        self._key = None
        if stop_w is not None:
            try:
                os.write(stop_w, b"x")
            except OSError:
                pass
            os.close(stop_w)
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)
        self._close_fds()

    def _close_fds(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
