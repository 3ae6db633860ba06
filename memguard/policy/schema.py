"""The TOML schema of a policy file: the keys each section takes and how each value is read."""

from __future__ import annotations

import sys
from typing import Any, Callable

from memguard.policy.options import (
    _active,
    _any_duration,
    _boolean,
    _bounds,
    _limit,
    _order,
    _release,
    _rules,
    _scope,
)
from memguard.policy.thresholds import parse_threshold
from memguard.policy.units import positive_count, positive_duration, positive_size, show_value

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.9 and 3.10 only
    pass


_MEMORY_KEYS: dict[str, Callable[[object], Any]] = {
    "scope": _scope,
    "limit": _limit,
    "warning": parse_threshold,
    "warning_heap": parse_threshold,
    "emergency": parse_threshold,
    "emergency_target": parse_threshold,
    "critical": parse_threshold,
    "check_interval": positive_duration,
    "sample_interval": positive_duration,
    "gc_interval": positive_duration,
    "emergency_order": _order,
    "cooldown": _any_duration,
    "recycle": _boolean,
    "signal_cleanup": _boolean,
    "log_samples": _boolean,
    "watch": _boolean,
    "summary_interval": positive_duration,
}
_STORE_KEYS: dict[str, Callable[[object], Any]] = {
    "max_age": positive_duration,
    "max_idle": positive_duration,
    "max_jobs": positive_count,
    "max_bytes": positive_size,
    "max_running": positive_duration,
    "active": _active,
    "release": _release,
    "order": _order,
    "bounds": _bounds,
    "max_age_hard": positive_duration,
}
_PIPELINE_KEYS: dict[str, Callable[[object], Any]] = {"rules": _rules}


def _redis_url(value: object) -> str:
    """[redis] url: where Redis stores connect when their code gives no URL (issue 14)."""
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a Redis URL such as \"redis://127.0.0.1:6379/0\" (redis://, "
                         f"rediss:// or unix://); got {show_value(value)}")
    return value


_REDIS_KEYS: dict[str, Callable[[object], Any]] = {"url": _redis_url, "limit": positive_size}
_SECTION_KEYS: dict[str, dict[str, Callable[[object], Any]]] = {
    "memory": _MEMORY_KEYS,
    "defaults": _STORE_KEYS,
    "pipeline": _PIPELINE_KEYS,
    "redis": _REDIS_KEYS,
}
_SECTIONS = ("memory", "defaults", "pipeline", "stores", "redis")
_SECTIONS_HELP = "[memory], [defaults], [pipeline], [stores.NAME], [redis]"
