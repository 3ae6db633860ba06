"""Thin adapters serving `memguard.web` from Flask, FastAPI/Starlette, Django and gunicorn.

Importing this package imports no web framework. Each adapter is a submodule, imported when
first reached, so both spellings work after a plain ``import memguard``::

    memguard.integrations.flask.init_app(app)
    from memguard.integrations.flask import init_app

An adapter whose framework is not installed raises `memguard.errors.MissingExtraError` (an
``ImportError``) naming the ``pip install 'memguard-jobs[EXTRA]'`` to run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["django", "fastapi", "flask", "gunicorn"]  # submodules, loaded by __getattr__


def __getattr__(name: str) -> ModuleType:
    """Import the adapter `name` on first access (PEP 562)."""
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
