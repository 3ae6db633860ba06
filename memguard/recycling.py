"""Asking the server to replace this worker at ``critical`` (``[memory] recycle = true``).

A server integration (gunicorn's, `memguard.integrations.gunicorn`) sets the monitor's
``on_recycle`` hook. `Recycler` calls it once per time memory reaches ``critical``, and not
while any store holds an active job the restart would lose (it asks again once they finish).
memguard never kills anything itself: without a hook it says so, once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from memguard._logging import logger

__all__ = ["Recycler"]


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
