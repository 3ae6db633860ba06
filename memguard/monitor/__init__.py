"""The monitor: the sampling thread, readings and growth, the emergency controller, levels and
lines, triggers, and the daemon loop every background thread runs on.
"""

from memguard.monitor.readings import MemoryStats
from memguard.monitor.thread import Monitor

__all__ = [
    "MemoryStats",
    "Monitor",
]
