"""memguard: keep long-running Python web processes under their memory limit.

This module only re-exports the public names; each lives in the module of its concern.
"""

from memguard._manager import MemoryManager, manager
from memguard.errors import MemguardError, PolicyError, StoreDefinitionError
from memguard.events import Cause, CleanupReport, EvictionEvent
from memguard.handles import StoreHandle, StoreStats
from memguard.memory import MemorySample
from memguard.monitor import MemoryStats
from memguard.policy import MemoryPolicy, Policy, StorePolicy, load_policy
from memguard.rules import Emergency, MaxAge, MaxBytes, MaxIdle, MaxJobs, Pipeline, Rule
from memguard.store import handle, managed_store
from memguard.touch import touches

__all__ = [
    "Cause",
    "CleanupReport",
    "Emergency",
    "EvictionEvent",
    "MaxAge",
    "MaxBytes",
    "MaxIdle",
    "MaxJobs",
    "MemguardError",
    "MemoryManager",
    "MemoryPolicy",
    "MemorySample",
    "MemoryStats",
    "Pipeline",
    "Policy",
    "PolicyError",
    "Rule",
    "StoreDefinitionError",
    "StoreHandle",
    "StorePolicy",
    "StoreStats",
    "handle",
    "load_policy",
    "managed_store",
    "manager",
    "touches",
]
