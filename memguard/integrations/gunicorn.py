"""gunicorn server hooks: start the monitor in each worker, stop it on exit, recycle at critical.

This module is itself a gunicorn configuration module (it defines the hooks and no other
setting), so an installed package is all a deployment needs::

    gunicorn -c python:memguard.integrations.gunicorn app:app

or, in a ``gunicorn.conf.py`` of your own::

    from memguard.integrations.gunicorn import child_exit, post_fork, post_worker_init, worker_exit

gunicorn picks the hooks up by name (``child_exit`` matters only with
``PROMETHEUS_MULTIPROC_DIR``, see `memguard.web.prometheus`). ``post_fork`` runs in each
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
from typing import TYPE_CHECKING, Any, Optional

from memguard._logging import announce, logger

if TYPE_CHECKING:
    from memguard.manager import MemoryManager

__all__ = ["GunicornHooks", "child_exit", "post_fork", "post_worker_init", "worker_exit"]


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
        if self._manager is None:
            from memguard.manager import manager

            return manager
        return self._manager

    def post_fork(self, server: Any, worker: Any) -> None:
        """gunicorn ``post_fork``: start this worker's monitor and arm the recycle hook."""
        from memguard.web.prometheus import ensure_sync, multiprocess_mode

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
        """gunicorn ``child_exit`` (runs in the arbiter): with ``PROMETHEUS_MULTIPROC_DIR``,
        drop the dead worker's gauges (``mark_process_dead``); its counters stay counted."""
        from memguard.web.prometheus import MULTIPROC_ENV

        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]

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
