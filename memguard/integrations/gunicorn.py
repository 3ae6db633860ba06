"""gunicorn server hooks: start the monitor in each worker, stop it on exit, recycle at critical.

This module is itself a gunicorn configuration module (it defines the hooks and no other
setting), so an installed package is all a deployment needs::

    gunicorn -c python:memguard.integrations.gunicorn app:app

or, in a ``gunicorn.conf.py`` of your own::

    from memguard.integrations.gunicorn import (
        child_exit, on_exit, post_fork, post_worker_init, pre_fork, worker_exit)

gunicorn picks the hooks up by name. With more than one worker, ``/metrics`` aggregates every
worker (prometheus-client's multiprocess mode, see `memguard.web.prometheus`): in the
directory ``PROMETHEUS_MULTIPROC_DIR`` names, else in a run directory these hooks manage
(``pre_fork`` makes it in the arbiter before a worker forks, ``post_fork`` makes sure each
worker uses it, ``child_exit`` drops a dead worker's gauges, ``on_exit`` removes it; without
``pre_fork`` and ``on_exit`` the directory is made by the first worker and removed when the
arbiter exits). ``post_fork`` runs in each
worker right after the fork and starts the monitor there (a monitor thread never survives a
fork, and the arbiter itself holds no job stores, so it runs none); ``post_worker_init``, once
the app is loaded, logs the start-up line naming its stores (without it, ``post_fork`` logs it,
before any store exists). ``worker_exit`` stops the monitor.
For a manager other than the default, build the hooks with `GunicornHooks`::

    hooks = GunicornHooks(my_manager)
    post_fork, post_worker_init = hooks.post_fork, hooks.post_worker_init
    worker_exit = hooks.worker_exit

Graceful recycle (opt-in: ``recycle = true`` under ``[memory]`` in the policy): when the
monitor reaches critical it calls its ``on_recycle`` hook, which these hooks set to
`GunicornHooks.recycle`: mark the worker not alive (the sync and gthread workers finish the
request in flight, leave their loop and exit) and send the worker itself SIGTERM, which
gunicorn workers (uvicorn's included) treat as "graceful shutdown" and which wakes a worker
waiting in ``select``. The arbiter then forks a fresh worker. Nothing is killed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, Optional

from memguard._logging import announce, logger

# Imported here, in the arbiter, when gunicorn reads its configuration: the workers then share
# the monitor's modules (copy-on-write) instead of each importing them in `post_fork`, and
# `post_fork` stays short. It runs before gunicorn sets the worker's signal handlers, so a
# SIGTERM that arrives meanwhile is lost and the worker lives until the graceful timeout
# kills it; importing the monitor there took about 100 ms of that window. The metrics module
# comes too (its multiprocess directory is the arbiter's business as well).
from memguard.manager import MemoryManager
from memguard.manager import manager as default_manager
from memguard.web.prometheus import (
    MULTIPROC_ENV,
    ensure_sync,
    multiprocess_mode,
    run_directory,
    use_directory,
)

__all__ = ["GunicornHooks", "child_exit", "on_exit", "post_fork", "post_worker_init",
           "pre_fork", "worker_exit"]


class GunicornHooks:
    """The gunicorn server hooks for one manager (default: ``memguard.manager``).

    `nudge=False` only marks the worker not alive on recycle, without the SIGTERM; a sync
    worker then notices at its next loop (within its timeout), an ASGI worker may not at all.
    """

    def __init__(self, manager: Optional[MemoryManager] = None, *, nudge: bool = True) -> None:
        self._manager = manager
        self.nudge = nudge
        self._recycling = threading.Event()

    @property
    def manager(self) -> MemoryManager:
        return default_manager if self._manager is None else self._manager

    def pre_fork(self, server: Any, worker: Any) -> None:
        """gunicorn ``pre_fork`` (runs in the arbiter before each worker forks): with more
        than one worker and no ``PROMETHEUS_MULTIPROC_DIR``, make the run directory the
        workers' metrics go to, and set the variable they inherit."""
        path = _managed_directory(server, os.getpid())
        if path is not None:
            _adopt_in_arbiter(path)

    def post_fork(self, server: Any, worker: Any) -> None:
        """gunicorn ``post_fork``: start this worker's monitor and arm the recycle hook;
        with more than one worker, write metrics where every worker's are aggregated."""
        path = _managed_directory(server, getattr(worker, "ppid", None) or os.getppid())
        if path is not None:  # no pre_fork hook made it: the arbiter's pid names it
            use_directory(path)
        # The app is not loaded yet (gunicorn loads it after post_fork): when our
        # post_worker_init is configured too, the start-up line waits for it, to name the
        # stores the app declares.
        monitor = self.manager.setup_memory_monitoring(announce=not _announces_later(server))
        if multiprocess_mode():  # PROMETHEUS_MULTIPROC_DIR: mirror this worker's figures
            from memguard.web.payloads import snapshot_collector

            ensure_sync(snapshot_collector(self.manager))
        self._recycling.clear()
        if monitor is not None:
            monitor.on_recycle = lambda: self.recycle(worker)
        logger.debug("memguard: monitor started in gunicorn worker %s", os.getpid())

    def post_worker_init(self, worker: Any) -> None:
        """gunicorn ``post_worker_init`` (the app is loaded): the start-up line, with the
        stores the app registered."""
        self.manager.announce_start()

    def worker_exit(self, server: Any, worker: Any) -> None:
        """gunicorn ``worker_exit``: stop the monitor thread before the worker exits."""
        self.manager.stop()

    def child_exit(self, server: Any, worker: Any) -> None:
        """gunicorn ``child_exit`` (runs in the arbiter): in multiprocess mode, drop the dead
        worker's gauges (``mark_process_dead``); its counters stay counted."""

        path = os.environ.get(MULTIPROC_ENV)
        if not path:  # the workers made the run directory (no pre_fork hook)
            managed = run_directory(os.getpid())
            if not os.path.isdir(managed):
                return
            path = _adopt_in_arbiter(managed)
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(worker.pid, path)  # type: ignore[no-untyped-call]

    def on_exit(self, server: Any) -> None:
        """gunicorn ``on_exit`` (the arbiter, last): remove the run directory memguard made."""
        _remove_run_directory(os.getpid())

    def recycle(self, worker: Any) -> None:
        """Ask gunicorn to replace `worker` gracefully, once: it finishes in-flight requests,
        exits, and the arbiter forks a replacement."""
        if self._recycling.is_set():
            return
        self._recycling.set()
        announce(logging.WARNING, "Memory critical: asking gunicorn to recycle worker %s "
                 "gracefully (it finishes its requests in flight; the arbiter starts a "
                 "replacement)", os.getpid())
        worker.alive = False
        if self.nudge:
            os.kill(os.getpid(), signal.SIGTERM)  # gunicorn workers: graceful shutdown


_default = GunicornHooks()
_adopted: set[str] = set()


def _managed_directory(server: Any, arbiter: int) -> Optional[str]:
    """The run directory memguard manages for `arbiter`'s workers, or None: one worker (its
    own figures are all there is), or ``PROMETHEUS_MULTIPROC_DIR`` set by the operator."""

    if os.environ.get(MULTIPROC_ENV):
        return None
    workers = getattr(getattr(server, "cfg", None), "workers", 1)
    if not isinstance(workers, int) or workers < 2:
        return None
    return run_directory(arbiter)


def _adopt_in_arbiter(path: str) -> str:
    """Use `path` in the arbiter too (its workers inherit the variable) and remove it when the
    arbiter exits (once per path)."""
    import atexit


    use_directory(path)
    if path not in _adopted:
        _adopted.add(path)
        atexit.register(_remove_run_directory, os.getpid())
    return path


def _remove_run_directory(arbiter: int) -> None:
    """Remove the run directory of `arbiter` if memguard made one (only from the arbiter:
    a worker exiting must not take its siblings' files)."""
    import shutil


    if os.getpid() != arbiter:
        return
    shutil.rmtree(run_directory(arbiter), ignore_errors=True)


def pre_fork(server: Any, worker: Any) -> None:
    """gunicorn ``pre_fork`` hook (see `GunicornHooks.pre_fork`)."""
    _default.pre_fork(server, worker)


def on_exit(server: Any) -> None:
    """gunicorn ``on_exit`` hook (see `GunicornHooks.on_exit`)."""
    _default.on_exit(server)


def _announces_later(server: Any) -> bool:
    """Whether gunicorn will call a memguard ``post_worker_init`` after loading the app."""
    hook = getattr(getattr(server, "cfg", None), "post_worker_init", None)
    return hook is post_worker_init or getattr(hook, "__func__", None) is (
        GunicornHooks.post_worker_init)


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn ``post_fork`` hook for ``memguard.manager`` (see `GunicornHooks.post_fork`)."""
    _default.post_fork(server, worker)


def post_worker_init(worker: Any) -> None:
    """gunicorn ``post_worker_init`` hook for ``memguard.manager``: the start-up line, once
    the app and its stores are loaded (see `GunicornHooks.post_worker_init`)."""
    _default.post_worker_init(worker)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn ``child_exit`` hook (see `GunicornHooks.child_exit`)."""
    _default.child_exit(server, worker)


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn ``worker_exit`` hook for ``memguard.manager``."""
    _default.worker_exit(server, worker)
