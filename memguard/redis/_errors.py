"""The errors of Redis stores, and the one place redis-py's exceptions are translated.

A Redis that cannot be reached, answers too late or is full must fail the operation that
needed it, loudly, with a `MemguardError`: never an empty answer that looks like an empty
store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Callable, Optional

from memguard.errors import RedisFull, RedisStoreError, RedisUnavailable

try:
    import redis.exceptions
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "memguard.redis needs redis-py: pip install 'memguard-jobs[redis]'") from error











@contextlib.contextmanager
def translated(operation: str, where: str,
               unavailable: Optional[Callable[[str], object]] = None) -> Iterator[None]:
    """Raise redis-py's errors during `operation` on the Redis at `where` as ours; tell
    `unavailable` (with the message) when Redis could not be reached."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
            redis.exceptions.BusyLoadingError) as error:
        message = f"Redis at {where} unavailable during {operation}: {error}"
        if unavailable is not None:
            unavailable(message)
        raise RedisUnavailable(message) from error
    except redis.exceptions.ResponseError as error:
        if isinstance(error, redis.exceptions.OutOfMemoryError) or str(error).startswith("OOM"):
            raise RedisFull(
                f"Redis at {where} is full (maxmemory reached, noeviction) during "
                f"{operation}; nothing was written: {error}") from error
        raise RedisStoreError(f"Redis at {where} failed {operation}: {error}") from error
