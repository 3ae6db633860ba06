"""A seed-like Flask app whose job stores live in Redis, one RedisStore per kind.

Served by gunicorn with two workers in tests/redis/test_redis_gunicorn.py: a job created
through one worker is polled through either. Environment: ``REDIS_URL``, ``JOB_SECONDS``
(how long a job runs), ``MEMGUARD_POLICY`` (read by memguard itself).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

from flask import Flask, abort, jsonify

from memguard import managed_store
from memguard.integrations.flask import init_app
from memguard.redis import RedisStore, RedisUnavailable

JOB_SECONDS = float(os.environ.get("JOB_SECONDS", "0.3"))


@managed_store(name="diagram", max_jobs=5)
class DiagramJobs(RedisStore):
    """Bounded by count: never more than 5 finished jobs, across both workers."""


@managed_store(name="iac", max_age="2s")
class IacJobs(RedisStore):
    """Bounded by age: a finished job goes 2 s after it was created."""


STORES: dict[str, RedisStore] = {"diagram": DiagramJobs(), "iac": IacJobs()}

app = Flask(__name__)
init_app(app, start=False)  # the gunicorn hooks start the monitor in each worker


@app.errorhandler(RedisUnavailable)
def redis_unavailable(error: RedisUnavailable) -> Any:
    """Redis is away: say so (503, retry later) rather than 404 a job that may exist."""
    return jsonify(error=str(error), pid=os.getpid()), 503


def _store(kind: str) -> RedisStore:
    store = STORES.get(kind)
    if store is None:
        abort(404)
    return store


def _work(store: RedisStore, job_id: str) -> None:
    job = store.get(job_id)
    if job is None:
        return
    job["status"] = "running"
    job["worker"] = os.getpid()
    time.sleep(JOB_SECONDS)
    job["result"] = {"text": "r" * 2000, "by": os.getpid()}
    job["status"] = "done"


@app.post("/api/<kind>")
def create(kind: str) -> Any:
    store = _store(kind)
    job_id = uuid.uuid4().hex
    store[job_id] = {"status": "pending", "result": None, "created_by": os.getpid()}
    threading.Thread(target=_work, args=(store, job_id), daemon=True).start()
    return jsonify(id=job_id, pid=os.getpid()), 202


@app.get("/api/<kind>/<job_id>")
def poll(kind: str, job_id: str) -> Any:
    job = _store(kind).get(job_id)
    if job is None:
        return jsonify(error="no such job", pid=os.getpid()), 404
    return jsonify(job=job, pid=os.getpid())
