"""memguard's version: written once, here.

The build reads it from this file (pyproject.toml: ``dynamic = ["version"]`` with
``[tool.hatch.version]``), so the wheel's metadata and ``memguard.__version__`` agree by
construction, and ``import memguard`` reads no file to learn it.
"""

from __future__ import annotations

from typing import Final

__version__ = "0.1.0"

DISTRIBUTION: Final = "memguard-jobs"
"""The name pip installs (the import name is ``memguard``; ``memguard`` on the registry is
another project)."""


def version() -> str:
    """memguard's version (PEP 440)."""
    return __version__
