"""Turn a framework that is not installed into an error naming the extra to install."""

from __future__ import annotations

from typing import Final

from memguard._version import DISTRIBUTION
from memguard.errors import MissingExtraError

__all__ = ["EXTRAS", "missing_extra"]

EXTRAS: Final = {
    "django": "django",
    "fastapi": "fastapi",
    "flask": "flask",
    "gunicorn": "gunicorn",
}
"""Integration module -> the pyproject extra that installs what it needs."""


def missing_extra(integration: str, error: ImportError) -> MissingExtraError:
    """The error to raise (``from error``) when `integration` cannot import its framework."""
    extra = EXTRAS.get(integration, integration)
    missing = getattr(error, "name", None) or integration
    return MissingExtraError(
        f"memguard.integrations.{integration} needs {missing!r}, which is not installed: "
        f"run pip install '{DISTRIBUTION}[{extra}]'")
