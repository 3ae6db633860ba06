"""`PinLeases`: this process's pins on one Redis store, held in Redis as leases.

A pin keeps a job from eviction by every worker. Each is counted here (in the handle's
index, so nested `in_use` blocks pin once) and held in Redis with a lease that a daemon
thread renews every third of `lease` while this process holds any: a crashed worker's pins
lapse after `lease` seconds instead of keeping its jobs forever.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any, Optional

from memguard._logging import logger
from memguard.redis._core import RedisCore
from memguard.redis.index import RedisIndex

#: Seconds a pin holds without renewal (a crashed worker's pins lapse after this).
PIN_LEASE = 30.0


class PinLeases:
    """The pins of store `name` held by this process, and their renewal."""

    def __init__(self, name: str, core: RedisCore, index: RedisIndex) -> None:
        self.name = name
        self.core = core
        self.index = index  # its `pins` counts each key's pins; its lock guards them
        self.lease = PIN_LEASE
        self._holder = uuid.uuid4().hex[:12]
        self._renewer: Optional[threading.Thread] = None

    @property
    def holder(self) -> str:
        """Who holds this process's pins (a forked child is another holder)."""
        return f"{self._holder}.{os.getpid()}"

    def pin(self, key: Any) -> None:
        with self.index.lock:
            count = self.index.pins.get(key, 0)
            if count == 0:
                self.core.pin([key], self.holder, self.lease)
            self.index.pins[key] = count + 1
            self._start_renewer()

    def unpin(self, key: Any) -> None:
        with self.index.lock:
            count = self.index.pins.get(key, 0)
            if count > 1:
                self.index.pins[key] = count - 1
                return
            self.index.pins.pop(key, None)
            if count == 1:
                self.core.unpin(key, self.holder)

    def _start_renewer(self) -> None:
        renewer = self._renewer
        if renewer is not None and renewer.is_alive():
            return
        self._renewer = threading.Thread(target=self._renew, name=f"memguard-pins-{self.name}",
                                         daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        """Renew this process's pins every third of the lease while any is held; a failed
        renewal is logged and retried (the pins lapse if Redis stays away longer)."""
        wait = threading.Event()
        while True:
            wait.wait(self.lease / 3)
            with self.index.lock:
                held = list(self.index.pins)
                if not held:
                    self._renewer = None
                    return
            try:
                self.core.pin(held, self.holder, self.lease)
            except Exception:
                logger.exception("memguard: could not renew %d pin(s) of store %s",
                                 len(held), self.name)
