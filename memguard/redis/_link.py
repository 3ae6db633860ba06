"""`RedisLink`: one Redis store's connection to its server, and what is known of its health.

The client and the scripts loaded on it; the one checked entry to the server (Redis 7 or
later, no evicting `maxmemory-policy`: checked at connect and again after Redis was
unreachable); and when Redis last answered and last failed to, which `stats()` and the
monitor's passes read to stop waiting on a Redis known to be away.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any, Optional

from memguard.errors import RedisUnavailable
from memguard.redis._errors import translated
from memguard.redis._scripts import Scripts
from memguard.redis.checks import require_no_eviction, require_redis_7


class RedisLink:
    """The client of one store, at `where` (for messages), with its scripts and health."""

    def __init__(self, client: Any, *, where: str, slot_key: str,
                 allow_eviction: bool = False) -> None:
        self.client = client
        self.where = where
        #: A key of the store: on a Redis Cluster, INFO goes to the node serving its slot.
        self.slot_key = slot_key
        self.allow_eviction = allow_eviction
        self.scripts = Scripts(client)
        self.checked = False  # the server passed `check_server` since it was last away
        #: When (time.monotonic) a call last got an answer: Redis is reachable again.
        self.answered_at = float("-inf")
        #: When (time.monotonic) an operation last found Redis unreachable, and its error.
        self.unavailable: Optional[tuple[float, str]] = None

    def translated(self, operation: str) -> contextlib.AbstractContextManager[None]:
        """Redis' errors during `operation` as ours; an unreachable Redis is remembered."""
        return translated(operation, self.where, self._unavailable)

    def _unavailable(self, error: str) -> None:
        self.unavailable = (time.monotonic(), error)
        self.checked = False  # a Redis that comes back may be another one

    def answered(self, reply: Any = None) -> Any:
        """Note that Redis answered now; returns `reply`."""
        self.answered_at = time.monotonic()
        return reply

    def connect(self) -> None:
        """Check the server now if it can be reached (at construction): a misconfigured
        Redis is refused before the first job is stored; an unreachable one is checked at
        the first operation that reaches it."""
        with contextlib.suppress(RedisUnavailable):
            self.check_server()

    def ensure_checked(self, operation: str) -> None:
        """Check the server before `operation` unless it was checked since it was away."""
        if not self.checked:
            self.check_server(operation)

    def check_server(self, operation: str = "connect") -> None:
        """Refuse, clearly, a Redis older than 7.0 (the scripts use its flags) and one whose
        `maxmemory-policy` evicts any key (unless `allow_eviction`); checked at connect and
        again after Redis was unreachable. A server that does not say (a proxy, a fake) is
        taken at its word."""
        with self.translated(operation):
            server = self.info("server")
            memory = self.info("memory")
        found = str(server.get("redis_version", "")) if isinstance(server, Mapping) else ""
        require_redis_7(found, self.where)
        if not self.allow_eviction and isinstance(memory, Mapping):
            require_no_eviction(str(memory.get("maxmemory_policy", "noeviction")), self.where)
        self.checked = True

    def memory(self) -> tuple[int, int]:
        """Redis' (used_memory, maxmemory); maxmemory 0 means no limit is set."""
        with self.translated("INFO memory"):
            info = self.info("memory")
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))

    def info(self, section: str) -> Any:
        """INFO `section` of the server holding this store's keys: on a Redis Cluster, the
        node that serves the store's hash slot (not whichever node the client picks)."""
        node_of = getattr(self.client, "get_node_from_key", None)
        if node_of is None:
            return self.client.info(section)
        node = node_of(self.slot_key)
        info = self.client.info(section, target_nodes=node)
        if isinstance(info, Mapping) and node.name in info and isinstance(info[node.name],
                                                                          Mapping):
            return info[node.name]  # some clients key a targeted reply by node
        return info
