"""memguard: keep long-running Python web processes under their memory limit.

This module only re-exports the public names; each lives in the module of its concern and is
imported on first access (PEP 562), so ``import memguard`` costs a process almost nothing until
a store, a policy or the manager is used. The block under ``TYPE_CHECKING`` is the same list
spelled as imports, for type checkers and IDEs.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from memguard._package import Package
from memguard._version import __version__

if TYPE_CHECKING:
    from memguard import integrations as integrations
    from memguard.errors import MemguardError, PolicyError, StoreDefinitionError
    from memguard.eviction.events import Cause, CleanupReport, EvictionEvent
    from memguard.eviction.rules import (
        Emergency,
        MaxAge,
        MaxBytes,
        MaxIdle,
        MaxJobs,
        Pipeline,
        Rule,
    )
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
else:
    # Under `else` so that type checkers, which read the imports above, still flag a misspelt
    # name instead of typing every unknown attribute as this function's result.
    def __getattr__(name: str) -> Any:
        """Import the module holding the public `name` on first access and bind it here
        (PEP 562). `managed_store`, `touches` and `handle` load the manager module first: it
        creates the default manager, which a store declared without ``manager=`` joins."""
        if name == "integrations":
            return importlib.import_module(f"{__name__}.integrations")
        home = {
            "MemguardError": "errors", "PolicyError": "errors", "StoreDefinitionError": "errors",
            "Cause": "eviction.events", "CleanupReport": "eviction.events",
            "EvictionEvent": "eviction.events",
            "Emergency": "eviction.rules", "MaxAge": "eviction.rules",
            "MaxBytes": "eviction.rules", "MaxIdle": "eviction.rules",
            "MaxJobs": "eviction.rules", "Pipeline": "eviction.rules", "Rule": "eviction.rules",
            "MemoryManager": "manager", "manager": "manager",
            "MemorySample": "memory.samples",
            "MemoryStats": "monitor.readings",
            "load_policy": "policy.files",
            "MemoryPolicy": "policy.options", "StorePolicy": "policy.options",
            "Policy": "policy.policy",
            "StoreHandle": "stores.protocol", "StoreStats": "stores.protocol",
            "handle": "stores.building", "managed_store": "stores.managed",
            "touches": "stores.touches",
        }.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        if name in ("handle", "managed_store", "touches"):
            importlib.import_module(f"{__name__}.manager")
        value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
        globals()[name] = value
        return value

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
# `integrations` is reachable (so `memguard.integrations.flask.init_app(app)` works after a
# plain `import memguard`) but not star-exported; it imports no framework until an adapter is used.

# `memguard.manager` is the default MemoryManager even after the submodule of that name loads.
sys.modules[__name__].__class__ = Package


def __dir__() -> list[str]:
    """The public names, whether loaded yet or not (what `dir` and completion show)."""
    return sorted({*__all__, "integrations", *(name for name in globals() if name[:2] == "__")})
