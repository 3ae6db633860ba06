"""Eviction: events, the rules and their `|` composite, and the one runner."""

from memguard.eviction.events import Cause, CleanupReport, EvictionEvent
from memguard.eviction.rules import Emergency, MaxAge, MaxBytes, MaxIdle, MaxJobs, Pipeline, Rule

__all__ = [
    "Cause",
    "CleanupReport",
    "Emergency",
    "EvictionEvent",
    "MaxAge",
    "MaxBytes",
    "MaxIdle",
    "MaxJobs",
    "Pipeline",
    "Rule",
]
