"""Memory levels: their names and order, the hysteresis between them, and health statuses.

The one home of the level vocabulary (DESIGN section 1, layer 0): the monitor moves between
levels, the web endpoints and the CLI turn them into health statuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Optional, Protocol

__all__ = [
    "HYSTERESIS",
    "LEVELS",
    "LEVEL_STATUS",
    "next_level",
    "rank",
    "raw_level",
    "threshold_of",
]

LEVELS: Final = ("ok", "warning", "emergency", "critical")
"""The memory levels, lowest first."""

LEVEL_STATUS: Final[Mapping[str, str]] = {
    "ok": "pass",
    "warning": "warn",
    "emergency": "warn",
    "critical": "fail",
}
"""Health status per level (IETF health-check draft). Emergency is ``warn``, not ``fail``: the
monitor is already cleaning up, and failing readiness then would only move traffic away from a
worker that is recovering."""

HYSTERESIS: Final = 0.05
"""A level is left only when usage falls this share of its threshold below it (5%); the
emergency controller also uses it as the margin of growth that re-arms a back-off."""

_RANK: Final = {name: position for position, name in enumerate(LEVELS)}


class LevelThresholds(Protocol):
    """What the level functions read: a threshold in bytes per level (None = not set)."""

    @property
    def warning(self) -> Optional[int]: ...
    @property
    def emergency(self) -> Optional[int]: ...
    @property
    def critical(self) -> Optional[int]: ...


def rank(level: str) -> int:
    """The position of `level` in `LEVELS` (ok = 0)."""
    return _RANK[level]


def threshold_of(thresholds: LevelThresholds, level: str) -> Optional[int]:
    """The bytes at which `level` starts (0 for ok, None when the threshold is not set)."""
    if level == "ok":
        return 0
    value: Optional[int] = getattr(thresholds, level)
    return value


def raw_level(usage: int, thresholds: LevelThresholds) -> str:
    """The highest level whose threshold `usage` has reached (no hysteresis)."""
    found = "ok"
    for level in LEVELS[1:]:
        threshold = threshold_of(thresholds, level)
        if threshold is not None and usage >= threshold:
            found = level
    return found


def next_level(current: str, usage: int, thresholds: LevelThresholds) -> str:
    """The level after `current` for `usage`: up at once, down only past the margin.

    Rising is immediate (usage at or above a threshold). Falling drops one level at a time
    while usage is below the current level's threshold minus `HYSTERESIS` of it, so usage
    hovering around a threshold does not flap (and log) on every sample.
    """
    reached = raw_level(usage, thresholds)
    if rank(reached) >= rank(current):
        return reached
    level = current
    while rank(level) > rank(reached):
        threshold = threshold_of(thresholds, level)
        if threshold is not None and usage >= threshold * (1 - HYSTERESIS):
            break
        level = LEVELS[rank(level) - 1]
    return level
