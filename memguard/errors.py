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

    Raised at decoration time, naming the class or function and the problem; for a
    `mapping=` store also when an instance is built (its `__init__` left the attribute unset,
    or set it to something that is not a mapping), naming the attributes that hold one.
    """


class MissingExtraError(MemguardError, ImportError):
    """An integration needs a package that is not installed; the message names the
    ``pip install 'memguard-jobs[EXTRA]'`` that brings it in."""


class RouteConflictError(MemguardError, ValueError):
    """A memguard endpoint would take a path the app already serves (its own ``/health``);
    the message names the path, the app's handler and the ``prefix=`` that avoids it."""


class RedisStoreError(MemguardError, RuntimeError):
    """A Redis store operation failed in Redis (base class of the Redis store errors)."""


class RedisUnavailable(RedisStoreError, ConnectionError):
    """Redis could not be reached, or did not answer in time (down, restarting, loading)."""


class RedisFull(RedisStoreError, MemoryError):
    """Redis refused a write: it is at `maxmemory` with the `noeviction` policy (OOM)."""


class RedisConfigError(MemguardError, ValueError):
    """A Redis store was set up with no way to reach Redis, or with a client it cannot use."""


class RunDirError(MemguardError, OSError):
    """The run directory is unusable or unsafe (owned by someone else, writable by others)."""


class TraceError(MemguardError, ValueError):
    """A trace file that cannot be read: names the file, the line and what is wrong."""


class DemoError(MemguardError, RuntimeError):
    """A child run failed to produce a result (its last error line is the message)."""


class CheckFailed(MemguardError):
    """A target could not be checked (unreachable URL, missing process, refused request).

    `main` prints it as one line and exits 1, like any failed check.
    """


class ProbeError(MemguardError, OSError):
    """A memory file could not be read or held something memguard cannot parse.

    The message names the file and the offending text. The monitor logs it and carries on;
    code calling a probe directly sees it raised.
    """
