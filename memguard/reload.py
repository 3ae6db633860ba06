"""Hot reload: re-read the policy file when it changes on disk (``[memory] watch = true``).

A `PolicyWatcher` thread runs beside a started monitor while the loaded policy came from a
file and says ``watch = true``. Every `POLL_SECONDS` it compares the file's (mtime, size,
inode): a change seen twice in a row (the edit has settled: editors write in steps, and
``mv new policy.toml`` swaps the inode) is loaded through ``manager.load_policy``, which
validates every store's new policy before applying any, so a reload applies whole or not at
all. A broken edit keeps the previous policy and logs the `PolicyError` (file, line, key, the
bad value and what is allowed) once per version of the file; fixing the file applies it. A
file that disappears is reported once and watched for its return. The environment overrides
(``MEMGUARD_MEMORY_LIMIT`` ...) apply to a reloaded file as they did at start.

A reloaded policy with ``watch = false`` stops the watcher; one loaded from another file moves
it there. A forked child (gunicorn ``--preload``) starts its own watcher.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Optional

from memguard.daemon import DaemonLoop
from memguard.errors import PolicyError

if TYPE_CHECKING:
    from memguard._manager import MemoryManager

__all__ = ["POLL_SECONDS", "PolicyWatcher", "update"]

logger = logging.getLogger("memguard")

POLL_SECONDS: Final = 0.5
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

    Its thread is a `memguard.daemon.DaemonLoop`: a step that raises is logged and the watch
    goes on; a thread that dies is started again.
    """

    def __init__(self, manager: MemoryManager, path: Path) -> None:
        self._manager = weakref.ref(manager)
        self.path = path
        self._loop = DaemonLoop("memguard-policy-watch", step=self._look,
                                interval=lambda: POLL_SECONDS, title="Policy watcher",
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
_guard = threading.Lock()


def update(manager: MemoryManager, enabled: bool) -> Optional[PolicyWatcher]:
    """Watch the file `manager`'s policy came from when `enabled`, else stop watching."""
    source = Path(str(manager.policy.source))
    if enabled and not source.is_file():
        logger.warning("memguard: watch = true, but the policy did not come from a file "
                       "(%s): nothing to watch", manager.policy.source)
        enabled = False
    with _guard:
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


def _after_fork_in_child() -> None:
    global _guard
    _guard = threading.Lock()
    for watcher in list(_watchers.values()):
        if watcher._loop.after_fork_in_child():  # it watched in the parent: watch here too
            try:
                watcher.start()
            except Exception:  # never break the fork over this; say so
                logger.exception("memguard: policy watcher did not restart after fork")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
