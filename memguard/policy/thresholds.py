"""Memory thresholds: what one may be, the order they must keep, and `Thresholds` in bytes.

A threshold is a size in bytes or a `Percent` of the memory limit. `MemoryPolicy`
(`memguard.policy.options`) reads each with `parse_threshold` and checks their order with
`threshold_problem`, which the TOML loader also asks so it can blame the file, line and
key that broke the order; `MemoryPolicy.resolve` turns them into `Thresholds` for a known
limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Union

import attrs

from memguard.policy.units import SIZE_HELP, Percent, format_size, parse_size, show_value

#: A threshold is a size in bytes or a percentage of the memory limit.
Threshold = Union[int, Percent]


#: A percentage threshold may be at most this share of the limit (a guard against typos).
_MAX_FRACTION = 10.0


def parse_threshold(value: object) -> Threshold:
    """A memory threshold: a size above zero or a percentage of the limit (0% < p <= 1000%)."""
    parsed = value if isinstance(value, Percent) else parse_size(value, allow_percent=True)
    allowed = f'{SIZE_HELP} or a percentage of the limit such as "80%"'
    if isinstance(parsed, Percent):
        if not 0 < parsed.fraction <= _MAX_FRACTION:
            raise ValueError(
                f"{allowed}; got {show_value(value)} (a percentage must be above 0% and at "
                f"most {_MAX_FRACTION * 100:g}%)"
            )
        return parsed
    if parsed <= 0:
        raise ValueError(f"{allowed}; got {show_value(value)} (must be more than zero)")
    return parsed


@attrs.frozen
class Thresholds:
    """Memory thresholds in bytes for one known limit (None = not set, or a percentage of a
    limit nobody knows)."""

    warning: Optional[int] = None
    warning_heap: Optional[int] = None
    emergency: Optional[int] = None
    emergency_target: Optional[int] = None
    critical: Optional[int] = None
    limit: Optional[int] = None


#: The memory thresholds (warning_heap measures the heap, so it is outside the order).
THRESHOLD_FIELDS = ("warning", "warning_heap", "emergency", "emergency_target", "critical")
#: Pairs (lower, upper) that must satisfy lower < upper when both are set and comparable.
_THRESHOLD_ORDER = (
    ("warning", "emergency"),
    ("emergency", "critical"),
    ("warning", "critical"),
    ("emergency_target", "emergency"),
)


@attrs.frozen
class ThresholdProblem:
    key: str  # the key to blame first
    other: str  # the other key of the pair (blamed when `key` was not written by the user)
    message: str


def threshold_problem(values: Mapping[str, Any]) -> Optional[ThresholdProblem]:
    """The first threshold rule `values` (MemoryPolicy fields by name) breaks, else None.

    Percentages need a limit. Two thresholds are compared when both are sizes, both are
    percentages, or the limit is a number (percentages then resolve). `limit` itself is not
    in the order: Heroku swaps past its quota before it restarts, so critical may exceed it.
    """
    limit = values.get("limit")
    for name in THRESHOLD_FIELDS:
        value = values.get(name)
        if isinstance(value, Percent) and limit is None:
            return ThresholdProblem(
                name,
                name,
                f"{value} is a percentage of the memory limit, but no limit is set; "
                'expected limit = "512MB" (a size) or limit = "auto"',
            )
    for lower, upper in _THRESHOLD_ORDER:
        low, high = values.get(lower), values.get(upper)
        if low is None or high is None:
            continue
        if isinstance(low, Percent) != isinstance(high, Percent):
            if not isinstance(limit, int):
                continue
            low_value = float(low.of(limit) if isinstance(low, Percent) else low)
            high_value = float(high.of(limit) if isinstance(high, Percent) else high)
        else:
            low_value, high_value = _magnitude(low), _magnitude(high)
        if not low_value < high_value:
            blamed, other = (lower, upper) if lower == "emergency_target" else (upper, lower)
            return ThresholdProblem(
                blamed,
                other,
                f"{lower} ({_show_threshold(low)}) must be below {upper} "
                f"({_show_threshold(high)}); expected warning < emergency < critical and "
                "emergency_target < emergency",
            )
    return None


def _magnitude(value: Threshold) -> float:
    return value.fraction if isinstance(value, Percent) else float(value)


def _show_threshold(value: Threshold) -> str:
    return str(value) if isinstance(value, Percent) else format_size(value)
