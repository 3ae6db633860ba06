"""Thin adapters serving `memguard.web` from Flask, FastAPI/Starlette and gunicorn.

Each adapter is imported on its own (``memguard.integrations.flask`` needs Flask installed,
and so on); this package imports none of them, so ``import memguard.integrations`` never
pulls in a web framework.
"""

__all__: list[str] = []
