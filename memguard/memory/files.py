"""Kept-open /proc and cgroup files: a sample reads them without opening anything."""

from __future__ import annotations

import contextlib
import os
import threading
import weakref

from memguard.errors import ProbeError
from memguard.memory.samples import PathLike

_kept_files: weakref.WeakSet[_KeptFile] = weakref.WeakSet()


class _KeptFile:
    """A file opened once and re-read from offset 0 with ``pread``: one syscall per read.

    ``pread`` has no shared offset, so threads, and a forked child holding the same descriptor,
    cannot disturb each other. The file is reopened when the pid changes, because ``/proc/self``
    is resolved when a file is opened: after ``fork`` the inherited descriptor still describes
    the parent.
    """

    __slots__ = ("__weakref__", "_lock", "_size", "_state", "path")

    def __init__(self, path: PathLike) -> None:
        self.path = os.fspath(path)
        self._state: tuple[int, int] = (-1, 0)  # (fd, pid that opened it)
        self._size = 4096
        self._lock = threading.Lock()
        _kept_files.add(self)

    def read(self) -> bytes:
        """The whole current content of the file.

        Raises OSError when it cannot be opened or read.
        """
        fd, owner = self._state
        if owner != os.getpid():
            fd = self._reopen()
        data = os.pread(fd, self._size, 0)
        while len(data) >= self._size:  # the file outgrew the buffer: read it whole
            self._size *= 4
            data = os.pread(fd, self._size, 0)
        return data

    def _reopen(self) -> int:
        with self._lock:
            pid = os.getpid()
            fd, owner = self._state
            if owner == pid:
                return fd
            new = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._state = (new, pid)
            # Only a process whose pid differs from `owner` gets here, and no thread of it ever
            # reads the old descriptor (reads check the owner first), so closing it is safe.
            if fd >= 0:
                os.close(fd)
            return new

    def _after_fork(self) -> None:
        # The lock may have been held by a parent thread that does not exist in the child.
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the descriptor; a later `read` reopens it."""
        with self._lock:
            fd, owner = self._state
            self._state = (-1, 0)
            if fd >= 0 and owner == os.getpid():
                os.close(fd)

    def __del__(self) -> None:
        fd, owner = self._state
        if fd >= 0 and owner == os.getpid():
            with contextlib.suppress(OSError):
                os.close(fd)


def _reset_kept_files_after_fork() -> None:
    for kept in list(_kept_files):
        kept._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_kept_files_after_fork)


def _read(kept: _KeptFile) -> bytes:
    try:
        return kept.read()
    except OSError as exc:
        raise ProbeError(f"cannot read {kept.path}: {exc.strerror or exc}") from exc


def _parse_int(kept: _KeptFile, text: bytes) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ProbeError(f"{kept.path}: expected a number of bytes, got {text[:80]!r}") from None


def _parse_stat(kept: _KeptFile, text: bytes) -> dict[str, int]:
    """A ``key value`` per line file (cgroup memory.stat) as a dict."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(b" ")
        try:
            out[key.decode("ascii")] = int(value)
        except ValueError:
            raise ProbeError(f"{kept.path}: cannot parse line {line[:80]!r}") from None
    return out
