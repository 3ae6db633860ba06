"""gunicorn configuration for the Flask example, with memguard's worker hooks.

    gunicorn -c examples/gunicorn.conf.py examples.flask_app:app

``post_fork`` starts memguard's monitor in each worker after the fork, ``post_worker_init``
logs its start-up line once the app is loaded, ``worker_exit`` stops
it; with ``recycle = true`` in the policy's ``[memory]`` a worker reaching critical is replaced
gracefully; ``child_exit`` keeps /metrics right when ``PROMETHEUS_MULTIPROC_DIR`` is set
(docs/http.md). Environment: ``PORT`` (default 8000), ``WEB_CONCURRENCY`` (workers, default 2).
"""

import os

from memguard.integrations.gunicorn import (  # noqa: F401
    child_exit,
    on_exit,
    post_fork,
    post_worker_init,
    pre_fork,
    worker_exit,
)

bind = f"127.0.0.1:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"  # jobs run in background threads next to request threads
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
graceful_timeout = 20
accesslog = "-"

__all__ = ["bind", "child_exit", "graceful_timeout", "post_fork", "post_worker_init", "threads",
           "worker_class", "worker_exit", "workers"]
