"""Shared job stores on Redis (DESIGN section 8): `RedisStore` under `@managed_store`.

Needs redis-py: `pip install 'memguard-jobs[redis]'`.
"""

from memguard.errors import RedisConfigError, RedisFull, RedisStoreError, RedisUnavailable
from memguard.redis.handle import RedisHandle
from memguard.redis.index import RedisStoreStats
from memguard.redis.job import RedisJob
from memguard.redis.store import RedisStore

__all__ = [
    "RedisConfigError",
    "RedisFull",
    "RedisHandle",
    "RedisJob",
    "RedisStore",
    "RedisStoreError",
    "RedisStoreStats",
    "RedisUnavailable",
]
