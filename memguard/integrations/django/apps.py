"""The AppConfig: load the policy and start the monitor once per process.

Django calls `MemguardConfig.ready` once per process that sets Django up: each gunicorn or
uvicorn worker (they import the app after the fork), or the master with ``--preload``, in
which case the monitor restarts in every forked worker by itself (`memguard.monitor` restarts
after a fork) and keeps running in the master, which holds no stores. ``start`` is idempotent.
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.conf import settings

__all__ = ["MemguardConfig", "options"]

OPTIONS = ("policy", "token", "start")


def options() -> dict[str, Any]:
    """The ``MEMGUARD`` setting (a dict; every key optional), checked."""
    from memguard.errors import MemguardError

    value = getattr(settings, "MEMGUARD", None) or {}
    if not isinstance(value, dict):
        raise MemguardError(f"settings.MEMGUARD: expected a dict with keys {', '.join(OPTIONS)};"
                            f" got {type(value).__name__}")
    unknown = sorted(set(value) - set(OPTIONS))
    if unknown:
        raise MemguardError(f"settings.MEMGUARD: unknown key(s) {', '.join(unknown)}; "
                            f"allowed: {', '.join(OPTIONS)}")
    return {"policy": None, "token": None, "start": True, **value}


class MemguardConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    """``memguard.integrations.django``: starts `memguard.manager`'s monitor in `ready`."""

    name = "memguard.integrations.django"
    label = "memguard"
    verbose_name = "memguard"
    default = True

    def ready(self) -> None:
        from memguard.integrations.django import checks  # registers the URL check
        from memguard.manager import manager

        del checks
        chosen = options()
        if chosen["policy"] is not None:
            manager.load_policy(chosen["policy"])
        if chosen["start"]:
            manager.start()
