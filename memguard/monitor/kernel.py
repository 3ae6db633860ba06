"""Kernel memory notifications that wake the monitor early (DESIGN section 4, "Bursts").

Where the probe reads a cgroup v1 memory controller whose ``cgroup.event_control`` this
process may write, `KernelWake` registers memory thresholds there (an eventfd and
``memory.usage_in_bytes``: the kernel signals the eventfd whenever usage crosses one, either
way) at the policy's ``warning``, ``emergency`` and ``critical``, and a small daemon thread
``memguard-kernel`` waits on it and wakes the monitor. It catches memory allocated outside the
stores, which the stores' own wake-ups (`memguard.stores.intake`) cannot see. The kernel
compares its raw ``usage_in_bytes`` (page cache included), never below memguard's usage, so
it fires at or before memguard's usage crosses a threshold: at worst an extra sample.

Where the probe reads a cgroup v2 memory controller, it registers a PSI trigger on the
cgroup's ``memory.pressure`` instead (`PSI_TRIGGER`: tasks of the cgroup stalled on memory for
`PSI_STALL_US` within a `PSI_WINDOW_US` window) and the same thread waits for ``POLLPRI`` on it.
cgroup v2 has no usage thresholds to register; a stall means the kernel is reclaiming in the
cgroup, which happens as usage nears ``memory.high`` or ``memory.max``, so the monitor samples
at once instead of at its interval. The kernel signals at most once per window, so a wake
costs at most a sample every two seconds. The window is two seconds because kernels from 6.5
accept only multiples of two seconds from processes without ``CAP_SYS_RESOURCE``.

Neither is used with the process scope, or where the kernel refuses (a v1 ``event_control``
that is not writable; a kernel without PSI, or one refusing the trigger with ``EINVAL`` or
``EPERM``): one debug line says so, no thread runs, and the monitor samples at its interval
and on the stores' wake-ups as before.
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

PSI_STALL_US = 50_000
"""Microseconds of memory stall (``some``: at least one task of the cgroup waiting on memory)
within a window that make the kernel signal: 2.5% of the window. An idle cgroup shows none; a
cgroup reclaiming at its limit shows far more. A false alarm costs one sample."""
PSI_WINDOW_US = 2_000_000
PSI_TRIGGER = f"some {PSI_STALL_US} {PSI_WINDOW_US}"


class KernelWake:
    """One monitor's kernel notification (cgroup v1 thresholds or a cgroup v2 PSI trigger)
    and the thread that waits on it.

    `ensure(probe, thresholds)` (each tick) registers the thresholds when they or the cgroup
    changed, or after a fork; `close()` ends it for good (a tick still running when the
    monitor stopped registers nothing after it). `fired` counts the notifications.
    `psi_trigger` is the text written to ``memory.pressure`` (default `PSI_TRIGGER`).
    """

    def __init__(self, wake: Callable[[], None], *, psi_trigger: str = PSI_TRIGGER) -> None:
        self._wake = wake
        self.psi_trigger = psi_trigger
        self._key: Optional[tuple[str, tuple[int, ...]]] = None
        self._pid = os.getpid()
        self._fds: list[int] = []
        self._stop_w: Optional[int] = None
        self._thread: Optional[threading.Thread] = None
        self._failed = False
        self._closed = False
        #: Serializes `ensure` (the monitor thread) and `close` (the thread stopping it).
        self._lock = threading.Lock()
        self.fired = 0

    @property
    def armed(self) -> bool:
        """Whether thresholds or a PSI trigger are registered and the thread waits on them."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def ensure(self, probe: object, thresholds: Thresholds) -> None:
        """Register `thresholds` for `probe`'s cgroup (v1), or the PSI trigger where any
        threshold is set (v2), unless they already are; nothing once closed."""
        self._after_fork()
        with self._lock:
            if not self._closed:
                self._ensure(probe, thresholds)

    def _after_fork(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's thread is not here
            self._pid, self._thread, self._key, self._failed = os.getpid(), None, None, False
            self._lock = threading.Lock()  # one a parent's thread held stays held
            self._close_fds()

    def _ensure(self, probe: object, thresholds: Thresholds) -> None:
        if (not isinstance(probe, CgroupProbe) or self._failed or probe.version not in (1, 2)
                or (probe.version == 1 and not hasattr(os, "eventfd"))):  # Python 3.10+
            if self._key is not None:
                self._unregister()
            return
        version = probe.version
        levels = tuple(sorted({t for t in (thresholds.warning, thresholds.emergency,
                                           thresholds.critical) if t is not None}))
        key = (str(probe.path), levels)
        if key == self._key and self.armed:
            return
        self._unregister()
        if not levels:  # nothing to guard: no reason to be woken
            return
        try:
            if version == 1:
                self._register(probe.path.as_posix(), levels)
            else:
                self._register_pressure(os.path.join(probe.path.as_posix(), "memory.pressure"))
        except OSError as error:  # refused: say so once, sample as before, no thread
            self._failed = True
            self._close_fds()
            what = ("cgroup v1 memory thresholds" if version == 1
                    else f"PSI trigger {self.psi_trigger!r} on memory.pressure")
            logger.debug("memguard: no %s (%s); the monitor samples at its interval and on "
                         "the stores' wake-ups", what, error)
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
        self._start(efd, pressure=False)

    def _register_pressure(self, path: str) -> None:
        """Write the PSI trigger to `path` (a ``memory.pressure``); the trigger lives as long
        as the file stays open. The text ends with a NUL: the kernel overwrites the last byte
        of what ``/proc/pressure/*`` is sent with one. The kernel refuses a bad or
        unprivileged trigger with an OSError at the write (EINVAL, EPERM), a kernel without
        PSI at the open or the write (ENOENT, EOPNOTSUPP)."""
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._fds.append(fd)
        os.write(fd, self.psi_trigger.encode() + b"\0")
        self._start(fd, pressure=True)

    def _start(self, fd: int, *, pressure: bool) -> None:
        stop_r, stop_w = os.pipe()
        self._fds.append(stop_r)
        self._stop_w = stop_w
        self._thread = threading.Thread(target=self._run, args=(fd, stop_r, pressure),
                                        daemon=True, name=THREAD_NAME)
        self._thread.start()

    def _run(self, fd: int, stop_r: int, pressure: bool) -> None:
        """Wait for the eventfd to be readable (v1) or for POLLPRI on the trigger (v2: the
        poll itself consumes the event); wake the monitor for each."""
        poller = select.poll()
        poller.register(fd, select.POLLPRI if pressure else select.POLLIN)
        poller.register(stop_r, select.POLLIN)
        try:
            while True:
                events = dict(poller.poll())
                if stop_r in events:
                    return
                flags = events.get(fd, 0)
                if flags & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    return  # the cgroup went away, or the fd was closed under us
                if not pressure:
                    try:
                        os.eventfd_read(fd)
                    except BlockingIOError:
                        continue
                self.fired += 1
                self._wake()
        except (OSError, ValueError):  # fds closed under us (close after a fork): end
            return

    def close(self) -> None:
        """Unregister and end the thread, for good: a later `ensure` registers nothing."""
        self._after_fork()
        with self._lock:
            self._closed = True
            self._unregister()

    def _unregister(self) -> None:
        """Unregister (closing the eventfd removes the thresholds, closing ``memory.pressure``
        the trigger) and end the thread."""
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
