"""Triggers from outside: SIGUSR1, the pid-file cleanup listener and the policy watcher."""

from __future__ import annotations

import _thread
import atexit
import os
import signal
import stat
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, Optional

from memguard._logging import logger
from memguard.errors import PolicyError, RunDirError
from memguard.monitor.daemon import DaemonLoop

if TYPE_CHECKING:
    from memguard.monitor.host import MonitorHost

Handler = Callable[[int, Optional[FrameType]], None]


def _owner(handler: object) -> str:
    """Who holds a signal, for people: the top package of its handler ("gunicorn"), "the
    application" for a handler of the main script, or how it is set when it is no function."""
    if handler is signal.SIG_IGN:
        return "no one (it is ignored)"
    if handler is None:
        return "a handler installed outside Python"
    package = str(getattr(handler, "__module__", None) or "").split(".")[0]
    return package if package and package != "__main__" else "the application"


class SignalTrigger:
    """One process's SIGUSR1 handler for one monitor. `wanted()` says whether memguard still
    wants the signal; `pending` is set by the handler and taken by the monitor thread.

    Only the main thread may install or restore a signal handler, so a request from another
    thread (a reload, a stop, a start) is carried out on the main thread:

    - a handler memguard no longer wants is removed as soon as the main thread runs Python:
      the asking thread queues a call of the handler itself on the main thread
      (`_thread.interrupt_main(SIGUSR1)`, Python 3.10+: no signal is sent), which puts the
      default action back. Until then, and on Python 3.9, a SIGUSR1 that arrives is never
      swallowed: the handler restores the default action and delivers it again;
    - a handler memguard wants is installed the next time the main thread starts the
      monitor or applies a policy (until then `memguard cleanup --pid` works; a warning says
      so).

    A handler of another (stopped) memguard monitor that is still installed is taken over,
    never taken for the application's own.
    """

    def __init__(self, wanted: Callable[[], bool]) -> None:
        self.wanted = wanted
        self.pending = False
        self.handler: Optional[Handler] = None
        #: A removal queued on the main thread (the next call of `on_signal` is ours).
        self.removal_queued = False

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
        turned off from another thread), restore the default action and, unless this call
        is the removal another thread queued, deliver the signal again: it is never
        swallowed. (A real SIGUSR1 arriving while a queued removal waits for the main thread
        is taken as that removal: Python runs one handler call for both.)"""
        queued, self.removal_queued = self.removal_queued, False
        if not self.wanted():
            self.handler = None
            if signal.getsignal(signum) == self.on_signal:
                signal.signal(signum, signal.SIG_DFL)
            if not queued:
                os.kill(os.getpid(), signum)
            return
        if not queued:  # (a queued removal whose monitor wants the signal again: no cleanup)
            self.pending = True

    def update(self) -> bool:
        """Install or remove the handler as `wanted()` says; True when newly installed."""
        if self.wanted():
            return self.install()
        self.remove()
        return False

    def install(self) -> bool:
        """Install the handler when allowed: main thread, and SIGUSR1 at SIG_DFL (or held by
        a memguard monitor that no longer wants it)."""
        if self.handler is not None or not hasattr(signal, "SIGUSR1"):
            return False
        if threading.current_thread() is not threading.main_thread():
            logger.warning("memguard: signal_cleanup: SIGUSR1 handler not installed yet: only "
                           "the main thread can, and it will when it next starts the monitor "
                           "or applies a policy (`memguard cleanup --pid` works meanwhile)")
            return False
        current = signal.getsignal(signal.SIGUSR1)
        owner = getattr(current, "__self__", None)
        if isinstance(owner, SignalTrigger) and owner is not self and not owner.wanted():
            owner.handler = None  # a stopped monitor's, not yet restored: ours now
            owner.removal_queued = False
            current = signal.SIG_DFL
        if current is not signal.SIG_DFL:
            # Normal under gunicorn (each worker reopens its logs on SIGUSR1): a plain INFO
            # line, not a warning with the handler's repr in every worker.
            pid = os.getpid()
            logger.info("memguard: SIGUSR1 stays with %s in pid %d; `memguard cleanup --pid "
                        "%d` asks this process for a cleanup instead", _owner(current), pid, pid)
            return False
        handler = self.on_signal
        signal.signal(signal.SIGUSR1, handler)
        self.handler = handler
        self.removal_queued = False
        logger.info("memguard: SIGUSR1 triggers an emergency cleanup (pid %d)", os.getpid())
        return True

    def remove(self) -> None:
        """Put SIG_DFL back, if our handler is still the installed one: at once on the main
        thread, else queued to run there (see the class docstring)."""
        handler = self.handler
        if handler is None:
            return
        installed = signal.getsignal(signal.SIGUSR1) == handler
        if threading.current_thread() is threading.main_thread():
            self.handler = None
            self.removal_queued = False
            if installed:
                signal.signal(signal.SIGUSR1, signal.SIG_DFL)
            return
        if not installed:  # replaced by its owner meanwhile: nothing of ours to restore
            self.handler = None
            return
        if sys.version_info >= (3, 10) and not self.removal_queued:
            self.removal_queued = True
            _thread.interrupt_main(signal.SIGUSR1)


RUN_DIR_ENV: Final = "MEMGUARD_RUN_DIR"
LISTENER_POLL_SECONDS: Final = 0.25
"""How often a listener looks for requests: a stat of a small directory, microseconds."""




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
    import json  # here, not at the top: a monitor that writes no beacon never loads it

    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)


class CleanupListener:
    """Answers ``memguard cleanup --pid`` requests for this process with
    ``manager.emergency_cleanup()``; see the module docstring for the protocol."""

    def __init__(self, manager: MonitorHost, directory: Optional[Path] = None) -> None:
        self._manager = weakref.ref(manager)
        self._directory = directory
        self._loop = DaemonLoop("memguard-cleanup-requests", step=self._look,
                                interval=lambda: LISTENER_POLL_SECONDS, title="Cleanup listener",
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
            "version": version(), "poll_seconds": LISTENER_POLL_SECONDS})
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



_listeners: weakref.WeakKeyDictionary[Any, CleanupListener] = weakref.WeakKeyDictionary()
_listeners_guard = threading.Lock()


def update_listener(manager: MonitorHost, enabled: bool) -> Optional[CleanupListener]:
    """Start `manager`'s listener when `enabled`, stop it otherwise; return it if running."""
    with _listeners_guard:
        listener = _listeners.get(manager)
        if not enabled:
            if listener is not None:
                listener.stop()
            return None
        if listener is None:
            listener = _listeners[manager] = CleanupListener(manager)
    return listener if listener.start() else None


def _listeners_after_fork() -> None:
    global _listeners_guard
    _listeners_guard = threading.Lock()
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


atexit.register(_at_exit)


WATCH_POLL_SECONDS: Final = 0.5
"""How often the file is stat'ed; a change is applied once seen unchanged one poll later."""

Signature = Optional[tuple[int, int, int]]


def signature(path: Path) -> Signature:
    """(mtime in ns, size, inode) of `path`, or None when it does not exist."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


class PolicyWatcher:
    """Reloads `manager`'s policy from `path` when the file changes (module docstring).

    Its thread is a `memguard.monitor.daemon.DaemonLoop`: a step that raises is logged and the watch
    goes on; a thread that dies is started again.
    """

    def __init__(self, manager: MonitorHost, path: Path) -> None:
        self._manager = weakref.ref(manager)
        self.path = path
        self._loop = DaemonLoop("memguard-policy-watch", step=self._look,
                                interval=lambda: WATCH_POLL_SECONDS, title="Policy watcher",
                                consequence=f"edits of {path} are no longer applied")
        # File signatures: of the policy in force, of the last look, of the last version
        # acted on (applied, refused, or reported gone).
        self._applied: Signature = None
        self._seen: Signature = None
        self._reported: Signature = None
        self.reloads = 0
        self.failures = 0

    def __repr__(self) -> str:
        return f"<PolicyWatcher {str(self.path)!r} reloads={self.reloads} failures={self.failures}>"

    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self) -> None:
        if self.running:
            return
        # Taken here, not in the thread: an edit made right after start() returns must count
        # as a change, whenever the thread first runs.
        self._applied = self._seen = self._reported = signature(self.path)
        self._loop.start()
        logger.info("memguard: watching %s for policy changes", self.path)

    def stop(self) -> None:
        self._loop.stop(5)

    def _look(self) -> None:
        """One look at the file: reload a change once it has settled (seen twice alike)."""
        current = signature(self.path)
        settled = current == self._seen
        self._seen = current
        if current in (self._applied, self._reported) or not settled:
            return
        self._reported = current
        if current is None:
            logger.error("memguard: policy file %s is gone; keeping the current "
                         "policy and watching for the file to return", self.path)
            return
        if self._reload():
            self._applied = current

    def _reload(self) -> bool:
        manager = self._manager()
        if manager is None:
            self._loop.ask_stop()
            return False
        try:
            manager.load_policy(self.path)
        except PolicyError as error:
            self.failures += 1
            logger.error("memguard: policy reload failed, keeping the previous policy: %s",
                         error)
            return False
        self.reloads += 1
        logger.warning("memguard: policy reloaded from %s", self.path)
        return True


_watchers: weakref.WeakKeyDictionary[Any, PolicyWatcher] = weakref.WeakKeyDictionary()
_watchers_guard = threading.Lock()


def update_watcher(manager: MonitorHost, enabled: bool) -> Optional[PolicyWatcher]:
    """Watch the file `manager`'s policy came from when `enabled`, else stop watching."""
    source = Path(str(manager.policy.source))
    if enabled and not source.is_file():
        logger.warning("memguard: watch = true, but the policy did not come from a file "
                       "(%s): nothing to watch", manager.policy.source)
        enabled = False
    with _watchers_guard:
        watcher = _watchers.get(manager)
        retired = None
        if watcher is not None and (not enabled or watcher.path != source):
            retired, watcher = watcher, None
            del _watchers[manager]
        if enabled and watcher is None:
            watcher = _watchers[manager] = PolicyWatcher(manager, source)
    if retired is not None:  # outside the guard: its thread may be the one calling us
        retired.stop()
    if watcher is not None:
        watcher.start()
    return watcher


def _watchers_after_fork() -> None:
    global _watchers_guard
    _watchers_guard = threading.Lock()
    for watcher in list(_watchers.values()):
        if watcher._loop.after_fork_in_child():  # it watched in the parent: watch here too
            try:
                watcher.start()
            except Exception:  # never break the fork over this; say so
                logger.exception("memguard: policy watcher did not restart after fork")


def _after_fork_in_child() -> None:
    """The triggers' one fork hook: fresh guards, and each listener or watcher that ran in
    the parent started again in the child."""
    _listeners_after_fork()
    _watchers_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
