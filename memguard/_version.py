"""memguard's version, read from the installed distribution's metadata.

The version is written once, in pyproject.toml; installed (wheel or ``pip install -e``) the
metadata carries it. Run from a source tree that was never installed there is no metadata,
and the version says so (``0+unknown``, a valid PEP 440 local version that sorts first)
rather than guessing.
"""

from __future__ import annotations

import functools
from typing import Final

__all__ = ["DISTRIBUTION", "UNKNOWN_VERSION", "version"]

DISTRIBUTION: Final = "memguard"
UNKNOWN_VERSION: Final = "0+unknown"


@functools.cache  # read once: /health asks on every request
def version() -> str:
    """The installed distribution's version, or `UNKNOWN_VERSION` when it is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as distribution_version

    try:
        return distribution_version(DISTRIBUTION)
    except PackageNotFoundError:
        return UNKNOWN_VERSION
