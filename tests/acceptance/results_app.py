"""A seed-like Flask app whose clients come back for their results (tests/acceptance/
test_results_kept.py serves it under gunicorn).

Three job stores, as a seed app has them: two dict subclasses and one class keeping its jobs
in a ``jobs`` attribute (``mapping=``). ``POST /jobs/<kind>?size=N`` stores a job as
``{"status": "running"}`` and hands it to a pool thread that "calls the AI" for 0.2-0.5 s,
then completes it in place with a result of N bytes (``job["result"] = ...;
job["status"] = "done"``): memguard never sees that write. ``GET /jobs/<kind>/<id>`` is the
client's poll: 404 when the job is gone, else its status and whether its result is still
there (an evicted job that somebody still holds has its result released to None).
``GET /stats`` counts jobs created, finished and lost while running (must stay 0).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask, jsonify, request

import memguard
from memguard import managed_store
from memguard.integrations import flask as memguard_flask

_CORPUS = "".join(f"resource aws_s3_bucket {i} terraform module " for i in range(200_000))


@managed_store(name="diagram")
class DiagramJobs(dict):  # type: ignore[type-arg]
    """Diagram jobs: a dict subclass."""


@managed_store(name="iac")
class IacJobs(dict):  # type: ignore[type-arg]
    """Infrastructure-as-code jobs: a dict subclass."""


@managed_store(name="application", mapping="jobs")
class ApplicationService:
    """Application jobs, kept in the service's `jobs` dict."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}


_service = ApplicationService()
STORES: dict[str, Any] = {"diagram": DiagramJobs(), "iac": IacJobs(),
                          "application": _service.jobs}
_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="ai")
_counts = {"created": 0, "finished": 0, "lost_running": 0}
_lock = threading.Lock()


def _result(size: int, salt: str) -> str:
    """`size` bytes of fresh text (concatenation copies)."""
    parts, have = [salt], len(salt)
    while have < size:
        piece = _CORPUS[: min(len(_CORPUS), size - have)]
        parts.append(piece)
        have += len(piece)
    return "".join(parts)


def _work(kind: str, job_id: str, job: dict[str, Any], size: int) -> None:
    time.sleep(random.uniform(0.2, 0.5))  # the AI call
    result = _result(size, job_id)
    if job_id not in STORES[kind]:  # evicted while running: must never happen
        with _lock:
            _counts["lost_running"] += 1
        return
    job["result"] = result  # completed in place: the store does not see this write
    job["status"] = "done"
    with _lock:
        _counts["finished"] += 1


app = Flask(__name__)
memguard_flask.init_app(app)


@app.post("/jobs/<kind>")
def create(kind: str) -> Any:
    size = int(request.args.get("size", "1048576"))
    job_id = uuid.uuid4().hex
    job: dict[str, Any] = {"status": "running", "result": None}
    STORES[kind][job_id] = job
    with _lock:
        _counts["created"] += 1
    _pool.submit(_work, kind, job_id, job, size)
    return jsonify({"id": job_id}), 202


@app.get("/jobs/<kind>/<job_id>")
def poll(kind: str, job_id: str) -> Any:
    job = STORES[kind].get(job_id)
    if job is None:
        return jsonify({"error": "not found"}), 404
    return jsonify({"status": job["status"], "result": job["result"] is not None})


@app.get("/stats")
def stats() -> Any:
    with _lock:
        counts = dict(_counts)
    counts["pid"] = os.getpid()
    return jsonify(counts)


memguard.manager.start()
