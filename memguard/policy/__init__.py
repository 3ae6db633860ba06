"""Policies: units, the option classes, and the TOML loader with provenance."""

from memguard.policy.files import (
    bundled_policy,
    bundled_policy_names,
    load_policy,
    policy_from_environment,
)
from memguard.policy.options import ActiveWhen, MemoryPolicy, StorePolicy
from memguard.policy.policy import Policy
from memguard.policy.thresholds import Thresholds

__all__ = [
    "ActiveWhen",
    "MemoryPolicy",
    "Policy",
    "StorePolicy",
    "Thresholds",
    "bundled_policy",
    "bundled_policy_names",
    "load_policy",
    "policy_from_environment",
]
