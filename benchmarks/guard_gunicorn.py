"""gunicorn configuration for the guard benchmark (``-c benchmarks/guard_gunicorn.py``).

One hook: when a worker exits (``max_requests`` recycling, or the end of a run), it writes
what the worker takes with it to ``$GUARD_EXIT_DIR/<pid>.json``: its peak RSS (``VmHWM``),
the app's counters, and how many jobs were still ``running`` in its stores. Those jobs are
lost to their clients: the replacement worker starts with empty stores. Without
``GUARD_EXIT_DIR`` the hook does nothing.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any


def worker_exit(server: Any, worker: Any) -> None:
    """Record the exiting worker's peak RSS and its running jobs (see the module docstring)."""
    directory = os.environ.get("GUARD_EXIT_DIR")
    app = sys.modules.get("guard_app")
    if not directory or app is None:
        return
    status = Path(f"/proc/{os.getpid()}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    running = sum(1 for store in app.STORES.values() for job in list(store.jobs.values())
                  if job.get("status") == "running")
    with app._counts_lock:
        counts = dict(app._counts)
    record = {"pid": os.getpid(), "peak": int(match.group(1)) * 1024 if match else 0,
              "running_at_exit": running, **counts}
    path = Path(directory) / f"{os.getpid()}.json"
    path.write_text(json.dumps(record))
