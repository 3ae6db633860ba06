"""memguard: keep long-running Python web processes under their memory limit.

This module only re-exports the public names; each lives in the module of its concern.
"""

from memguard import integrations as integrations
from memguard._version import __version__
from memguard.errors import MemguardError, PolicyError, StoreDefinitionError
from memguard.eviction.events import Cause, CleanupReport, EvictionEvent
from memguard.eviction.rules import Emergency, MaxAge, MaxBytes, MaxIdle, MaxJobs, Pipeline, Rule
from memguard.manager import MemoryManager, manager
from memguard.memory.samples import MemorySample
from memguard.monitor.readings import MemoryStats
from memguard.policy.files import load_policy
from memguard.policy.options import MemoryPolicy, StorePolicy
from memguard.policy.policy import Policy
from memguard.stores.building import handle
from memguard.stores.managed import managed_store
from memguard.stores.protocol import StoreHandle, StoreStats
from memguard.stores.touches import touches

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
    "__version__",
    "handle",
    "load_policy",
    "managed_store",
    "manager",
    "touches",
]
# `integrations` is bound (so `memguard.integrations.flask.init_app(app)` works after a plain
# `import memguard`) but not star-exported; it imports no framework until an adapter is used.
