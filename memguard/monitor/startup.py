"""The start-up line: what a process logs once when its memory monitoring starts.

One line per process (a forked worker says it too): the policy, the limit and where it comes
from (or how to give one when none is known), the scope, the thresholds in bytes and the
stores registered so far. It reads no sample (a probe may be slow): the limit is the
policy's or the container's.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Optional

from memguard._logging import announce
from memguard.policy.policy import Policy
from memguard.policy.units import format_size


class StartupLine:
    """Says the start-up line at most once per process id."""

    __slots__ = ("said_in",)

    def __init__(self) -> None:
        self.said_in: Optional[int] = None  # the pid that said it

    def say_once(self, policy: Policy, *, detected_limit: Callable[[], Optional[int]],
                 own_probe: bool, stores: Callable[[], list[str]]) -> None:
        """Log the line unless this process did already. `detected_limit` finds the
        container's limit (the monitor's readings do); `own_probe`: the manager was given a
        probe (which knows its limit); `stores` lists the store names when called."""
        if self.said_in == os.getpid():
            return
        self.said_in = os.getpid()
        say_started(policy, detected_limit=detected_limit, own_probe=own_probe, stores=stores())


def say_started(policy: Policy, *, detected_limit: Callable[[], Optional[int]],
                own_probe: bool, stores: list[str]) -> None:
    """Log the start-up line (see the module docstring)."""
    memory = policy.memory
    scope = memory.scope
    if isinstance(memory.limit, int):
        limit: Optional[int] = memory.limit
        said = f"limit {format_size(memory.limit)} (the policy's)"
    elif own_probe:  # a probe of the app's own says what its limit is
        limit, said = None, "limit as the manager's probe reports it"
    else:
        limit = detected_limit() if memory.limit == "auto" else None
        if scope == "auto":
            scope = "cgroup" if limit is not None else "process"
        said = (f"limit {format_size(limit)} (the container's)" if limit is not None else
                "no memory limit known (limit \"auto\" found no container limit): "
                "thresholds given as percentages are off; set [memory] limit or "
                "MEMGUARD_MEMORY_LIMIT")
    thresholds = memory.resolve(limit)
    levels = ", ".join(f"{name} {format_size(value)}" for name in
                       ("warning", "emergency", "critical")
                       if (value := getattr(thresholds, name)) is not None)
    named = f"stores {', '.join(stores)}" if stores else "no store registered yet"
    announce(logging.INFO, "Memory guard started in pid %d: policy %s, %s, scope %s; %s; %s",
             os.getpid(), policy.source, said, scope, levels or "no thresholds", named)
