"""What a Redis store requires of its server and of a job's field names, checked before use."""

from __future__ import annotations

from memguard.errors import RedisConfigError, RedisStoreError
from memguard.redis._scripts import GEN_FIELD

#: `maxmemory-policy` values under which Redis may delete memguard's keys by itself. The
#: `volatile-*` policies evict only keys with a TTL, and no key of a store has one.
EVICTING_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


def require_no_eviction(policy: str, where: str) -> None:
    """Raise RedisConfigError when Redis' `maxmemory-policy` lets it evict any key."""
    if policy.startswith("allkeys-") or policy in EVICTING_POLICIES:
        raise RedisConfigError(
            f"Redis at {where} has maxmemory-policy {policy}: at its maxmemory it deletes "
            "keys of its own choosing, running jobs and half of a job's keys included. Set "
            "maxmemory-policy to noeviction (or a volatile-* policy: memguard's keys have no "
            "TTL) and let memguard evict, or pass allow_redis_eviction=True to RedisStore to "
            "accept losing jobs")


def require_redis_7(version: str, where: str) -> None:
    """Raise RedisStoreError when `version` (INFO's redis_version) is below 7.0."""
    try:
        major = int(version.split(".", 1)[0])
    except ValueError:
        return  # unknown: not assumed either way
    if major < 7:
        raise RedisStoreError(
            f"Redis at {where} runs {version}; memguard.redis needs Redis >= 7.0 (its scripts "
            "use script flags, so that a full Redis refuses a write before it starts)")


def check_field(job_id: str, field: object) -> None:
    """Raise TypeError unless `field` can name a field of a stored job."""
    if not isinstance(field, str):
        raise TypeError(f"job {job_id!r}: field names are strings; got {field!r}")
    if field == GEN_FIELD:
        raise ValueError(f"job {job_id!r}: field name {field!r} is reserved for memguard (the "
                         "job's generation); any other string is allowed")
