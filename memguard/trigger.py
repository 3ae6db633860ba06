"""Cleanup requests by pid: what ``memguard cleanup --pid PID`` talks to.

A signal cannot serve here. gunicorn's workers own SIGUSR1 (log reopening), uvicorn owns
SIGINT and SIGTERM, and a signal tells its sender nothing: ``kill`` succeeds whether or not
anyone in the process acts on it. So the request travels through a private directory and the
answer comes back the same way:

- A process whose policy says ``signal_cleanup = true`` runs a `CleanupListener` beside its
  monitor. It writes a *beacon*, ``PID.listen`` (JSON: pid, process start time, memguard's
  version), into the run directory and looks for ``PID.NONCE.request`` files every
  `POLL_SECONDS`.
- ``memguard cleanup --pid PID`` finds the beacon (no beacon, or one left by a dead process:
  exit 1, nothing listens there), drops a request, and waits for ``PID.NONCE.report``: the
  `CleanupReport` as JSON, written by the process that ran the cleanup. No report within the
  timeout: exit 1.

The run directory is ``$MEMGUARD_RUN_DIR``, else ``/tmp/memguard-UID`` (the app's uid); it is
created mode 0700 and refused when another user owns it or others can write to it. Anyone who
can write there can already signal the process. This works the same under gunicorn (sync,
gthread, uvicorn workers), uvicorn and plain Python, in any thread layout, and survives forks
(a forked child starts its own listener and beacon).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import stat
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Optional

from memguard.daemon import DaemonLoop

if TYPE_CHECKING:
    from memguard._manager import MemoryManager

__all__ = [
    "POLL_SECONDS",
    "RUN_DIR_ENV",
    "CleanupListener",
    "RunDirError",
    "beacon_path",
    "process_start_time",
    "run_dir",
    "update",
]

logger = logging.getLogger("memguard")

RUN_DIR_ENV: Final = "MEMGUARD_RUN_DIR"
POLL_SECONDS: Final = 0.25
"""How often a listener looks for requests: a stat of a small directory, microseconds."""


class RunDirError(OSError):
    """The run directory is unusable or unsafe (owned by someone else, writable by others)."""


def run_dir(uid: Optional[int] = None) -> Path:
    """The directory requests and beacons live in, for the processes of `uid` (default:
    ours): ``$MEMGUARD_RUN_DIR`` else ``/tmp/memguard-UID``."""
    configured = os.environ.get(RUN_DIR_ENV, "").strip()
    if configured:
        return Path(configured)
    return Path("/tmp") / f"memguard-{os.getuid() if uid is None else uid}"


def ensure_run_dir(directory: Path) -> Path:
    """Create `directory` (0700) if needed and check it is ours and private."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.lstat()
    except OSError as error:
        raise RunDirError(f"cannot use {directory}: {error.strerror or error}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise RunDirError(f"{directory} is not a directory")
    if info.st_uid != os.getuid():
        raise RunDirError(f"{directory} belongs to uid {info.st_uid}, not to this process's "
                          f"uid {os.getuid()}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RunDirError(f"{directory} is writable by other users (mode "
                          f"{stat.S_IMODE(info.st_mode):o}); expected 700")
    return directory


def beacon_path(directory: Path, pid: int) -> Path:
    return directory / f"{pid}.listen"


def process_start_time(pid: int) -> Optional[float]:
    """The start time of `pid` (psutil), to tell a beacon from one left by a reused pid."""
    try:
        import psutil  # type: ignore[import-untyped, unused-ignore]

        return float(psutil.Process(pid).create_time())
    except Exception:  # gone, or not readable: the caller treats the beacon as unproven
        return None


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)


class CleanupListener:
    """Answers ``memguard cleanup --pid`` requests for this process with
    ``manager.emergency_cleanup()``; see the module docstring for the protocol."""

    def __init__(self, manager: MemoryManager, directory: Optional[Path] = None) -> None:
        self._manager = weakref.ref(manager)
        self._directory = directory
        self._loop = DaemonLoop("memguard-cleanup-requests", step=self._look,
                                interval=lambda: POLL_SECONDS, title="Cleanup listener",
                                consequence="`memguard cleanup --pid` gets no answer")
        self._pid = 0
        self.directory: Optional[Path] = None

    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self) -> bool:
        """Write this process's beacon and start listening; False (logged) when the run
        directory cannot be used."""
        if self.running:
            return True
        try:
            directory = ensure_run_dir(self._directory or run_dir())
        except RunDirError as error:
            logger.warning("memguard: signal_cleanup: not listening for cleanup requests: %s",
                           error)
            return False
        self.directory, self._pid = directory, os.getpid()
        from memguard._version import version

        _write_atomically(beacon_path(directory, self._pid), {
            "pid": self._pid, "started": process_start_time(self._pid),
            "version": version(), "poll_seconds": POLL_SECONDS})
        self._loop.start()
        logger.info("memguard: pid %d answers `memguard cleanup --pid %d` (requests in %s)",
                    self._pid, self._pid, directory)
        return True

    def stop(self) -> None:
        """Stop listening and remove this process's beacon."""
        self._loop.stop(5)
        self._remove_beacon()

    def _remove_beacon(self) -> None:
        if self.directory is not None and self._pid == os.getpid():
            try:
                beacon_path(self.directory, self._pid).unlink()
            except OSError:
                pass

    def _look(self) -> None:
        """One look at the run directory: answer each request addressed to this process."""
        directory = self.directory
        if directory is None:
            return
        prefix, suffix = f"{os.getpid()}.", ".request"
        for entry in os.scandir(directory):
            if entry.name.startswith(prefix) and entry.name.endswith(suffix):
                self._answer(directory, entry.name[len(prefix):-len(suffix)])

    def _answer(self, directory: Path, nonce: str) -> None:
        pid = os.getpid()
        try:
            (directory / f"{pid}.{nonce}.request").unlink()  # taken: nobody answers twice
        except FileNotFoundError:
            return
        manager = self._manager()
        logger.warning("memguard: cleanup requested by `memguard cleanup --pid %d`", pid)
        try:
            if manager is None:
                raise RuntimeError("the manager is gone")
            answer: dict[str, Any] = {"pid": pid, "report": manager.emergency_cleanup().to_dict()}
        except Exception as error:
            logger.exception("memguard: requested cleanup failed")
            answer = {"pid": pid, "error": f"{type(error).__name__}: {error}"[:300]}
        _write_atomically(directory / f"{pid}.{nonce}.report", answer)


# --------------------------------------------------------------------------------------------
# One listener per manager, started and stopped by the manager as its policy says.

_listeners: weakref.WeakKeyDictionary[Any, CleanupListener] = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def update(manager: MemoryManager, enabled: bool) -> Optional[CleanupListener]:
    """Start `manager`'s listener when `enabled`, stop it otherwise; return it if running."""
    with _guard:
        listener = _listeners.get(manager)
        if not enabled:
            if listener is not None:
                listener.stop()
            return None
        if listener is None:
            listener = _listeners[manager] = CleanupListener(manager)
    return listener if listener.start() else None


def _after_fork_in_child() -> None:
    global _guard
    _guard = threading.Lock()
    for manager, listener in list(_listeners.items()):
        if listener._loop.after_fork_in_child():  # it listened in the parent: here too
            try:
                listener.start()
            except Exception:  # never break the fork over this; say so
                logger.exception("memguard: cleanup listener did not restart after fork")
        del manager


def _at_exit() -> None:
    for listener in list(_listeners.values()):
        listener._loop.ask_stop()
        listener._remove_beacon()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
