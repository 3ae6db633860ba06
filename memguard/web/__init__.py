"""The HTTP surfaces: health, memory, cleanup, metrics and the dashboard, as ASGI and WSGI apps."""

from memguard.web.asgi import asgi_app
from memguard.web.wsgi import wsgi_app

__all__ = [
    "asgi_app",
    "wsgi_app",
]
