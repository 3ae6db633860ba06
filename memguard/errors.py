"""The exceptions memguard raises.

Every error a user can cause derives from `MemguardError`, and also from the builtin that
best describes it, so `except ValueError` in existing code keeps working.
"""

from __future__ import annotations

from typing import Optional


class MemguardError(Exception):
    """Base class of every memguard error."""


class PolicyError(MemguardError, ValueError):
    """A policy (TOML file, text or option) holds a value memguard cannot accept.

    `source` is the file or `<string>`, `line` the 1-based line of the bad value when known,
    `key` the dotted key path (`stores.diagram.max_age`).
    """

    def __init__(
        self,
        message: str,
        *,
        source: str = "<string>",
        line: Optional[int] = None,
        key: Optional[str] = None,
    ) -> None:
        self.source = source
        self.line = line
        self.key = key
        self.message = message
        where = source if line is None else f"{source}:{line}"
        prefix = f"{where}: " + (f"{key}: " if key else "")
        super().__init__(prefix + message)


class StoreDefinitionError(MemguardError, TypeError):
    """`@managed_store` or `@touches` was applied where it cannot work.

    Raised at decoration time, naming the class or function and the problem.
    """


class MissingExtraError(MemguardError, ImportError):
    """An integration needs a package that is not installed; the message names the
    ``pip install 'memguard[EXTRA]'`` that brings it in."""


class RouteConflictError(MemguardError, ValueError):
    """A memguard endpoint would take a path the app already serves (its own ``/health``);
    the message names the path, the app's handler and the ``prefix=`` that avoids it."""
