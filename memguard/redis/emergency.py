"""The Redis emergency rule: what a Redis store evicts when Redis' own memory runs short.

Worker memory does not hold Redis jobs, so a worker's emergency evicts nothing from them;
Redis' used memory drives their emergency instead. It is checked at each pass, and at once
when Redis refuses a write as full (`RedisHandle` runs it for every Redis store of the
process on that server then).
"""

from __future__ import annotations

from typing import Optional

from memguard._logging import logger
from memguard.policy.units import format_size
from memguard.redis._core import RedisCore
from memguard.redis._fields import Victim

#: The rule acts when Redis' used memory reaches this share of its limit, and evicts (by
#: stored bytes) down to the target share.
EMERGENCY_SHARE = 0.90
TARGET_SHARE = 0.80


def redis_emergency(core: RedisCore, *, limit: Optional[int], order: str, store: str,
                    full: bool = False, found: Optional[list[Victim]] = None) -> list[Victim]:
    """Evict in `order` while Redis' memory is past its emergency share of `limit` (the one
    set in code or by the policy; else the server's `maxmemory`); `full`: Redis just refused
    a write, so its own `maxmemory` is the limit that holds. Victims are appended to `found`
    (and returned) as each batch goes; nothing to do returns a new empty list."""
    used, maxmemory = core.link.memory()
    limit = limit or maxmemory
    if full and maxmemory:
        limit = min(limit, maxmemory)
    if not limit or used < (TARGET_SHARE if full else EMERGENCY_SHARE) * limit:
        return []
    found = [] if found is None else found
    need = max(int(used - TARGET_SHARE * limit), 1)
    before = len(found)
    core.evict_bytes(order, need, found)
    logger.warning("memguard: Redis memory %s of %s: emergency evicted %d job(s) from %s",
                   format_size(used), format_size(limit), len(found) - before, store)
    return found
