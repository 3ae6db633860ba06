"""Eviction: events, the rules and their `|` composite, a store's plan, and the one runner."""

from memguard.eviction.events import Cause, CleanupReport, EvictionEvent
from memguard.eviction.plan import EvictionPlan, plan_for
from memguard.eviction.rules import Emergency, MaxAge, MaxBytes, MaxIdle, MaxJobs, Pipeline, Rule

__all__ = [
    "Cause",
    "CleanupReport",
    "Emergency",
    "EvictionEvent",
    "EvictionPlan",
    "MaxAge",
    "MaxBytes",
    "MaxIdle",
    "MaxJobs",
    "Pipeline",
    "Rule",
    "plan_for",
]
