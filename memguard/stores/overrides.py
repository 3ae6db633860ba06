"""One line when a policy overrides a store's decorator argument.

`[stores.NAME]` and the environment's overrides rank above `@managed_store(...)` arguments
(the policy is the operator's knob): that is by design, but a developer reading the
decorator should not have to guess why the store behaves otherwise, so the first time a
process applies such an override it says so, once per store, key and values.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from memguard._logging import announce
from memguard.policy.policy import Policy
from memguard.policy.units import format_duration, format_size

_said: set[tuple[str, str, str, str, str]] = set()
_lock = threading.Lock()
_DURATIONS = frozenset({"max_age", "max_idle"})


def _shown(key: str, value: Any) -> str:
    if key in _DURATIONS and isinstance(value, (int, float)):
        return format_duration(value)
    if key == "max_bytes" and isinstance(value, int):
        return format_size(value)
    return str(value)


def say_overrides(name: str, policy: Policy, declared: Mapping[str, Any]) -> None:
    """Announce each decorator argument of store `name` that `policy` overrides, once per
    process for the same store, key, values and origin."""
    for key, mine, effective, origin in policy.overridden(name, declared):
        mine_text, effective_text = _shown(key, mine), _shown(key, effective)
        said = (name, key, mine_text, effective_text, origin)
        with _lock:
            if said in _said:
                continue
            _said.add(said)
        announce(logging.INFO, "Memory policy: store %s %s is %s from %s, over the "
                 "decorator's %s", name, key, effective_text, origin, mine_text)
