"""memguard's version: written once, here.

The build reads it from this file (pyproject.toml: ``dynamic = ["version"]`` with
``[tool.hatch.version]``), so the wheel's metadata and ``memguard.__version__`` agree by
construction, and ``import memguard`` reads no file to learn it.
"""

from __future__ import annotations

__version__ = "0.1.0"


def version() -> str:
    """memguard's version (PEP 440)."""
    return __version__
