"""A seed-like Flask app whose clients come back for their results: the results-kept
acceptance test (tests/acceptance/test_results_kept.py) and the ``results`` benchmark serve it
under gunicorn, driven by ``benchmarks/results_load.py``.

Three job stores, as a seed app has them: two dict subclasses and one class keeping its jobs
in a ``jobs`` attribute (``mapping=``). ``POST /jobs/<kind>?size=N`` stores a job as
``{"status": "running"}`` and hands it to a pool thread that "calls the AI" for 0.2-0.5 s,
then completes it in place with a result of N bytes (``job["result"] = ...;
job["status"] = "done"``): memguard never sees that write. ``GET /jobs/<kind>/<id>`` is the
client's poll: 404 when the job is gone, else its status and whether its result is still
there (an evicted job that somebody still holds has its result released to None).
``GET /stats`` counts jobs created, finished and lost while running (must stay 0).

``GET /trace`` is the run as it happened, per job, on the machine's monotonic clock (the one
``time.monotonic()`` reads in every process): its size, when it was posted, when its result
was ready, when it was first polled and when memguard evicted it (an ``on_evict`` callback).
The driver builds the clairvoyant reference's demands from it.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from flask import Flask, jsonify, request
from result_text import text

import memguard
from memguard import EvictionEvent, managed_store
from memguard.integrations import flask as memguard_flask


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
#: ~8.4 MB: a 2-6 MiB result is one slice of it (the results-kept figures were measured so)
_CORPUS = "".join(f"resource aws_s3_bucket {i} terraform module " for i in range(200_000))
_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="ai")
_counts = {"created": 0, "finished": 0, "lost_running": 0}
_lock = threading.Lock()
#: job id -> [size, posted, ready, polled, evicted] (None until it happens)
_trace: dict[str, list[Optional[float]]] = {}


def _work(kind: str, job_id: str, job: dict[str, Any], size: int) -> None:
    time.sleep(random.uniform(0.2, 0.5))  # the AI call
    result = text(size, job_id, _CORPUS)
    if job_id not in STORES[kind]:  # evicted while running: must never happen
        with _lock:
            _counts["lost_running"] += 1
        return
    with _lock:  # stamped before the poll can see it done (a poll stamps after it looks)
        _trace[job_id][2] = time.monotonic()
    job["result"] = result  # completed in place: the store does not see this write
    job["status"] = "done"
    with _lock:
        _counts["finished"] += 1


@memguard.manager.on_evict
def _evicted(event: EvictionEvent) -> None:
    now = time.monotonic()
    with _lock:
        record = _trace.get(str(event.key))
        if record is not None and record[4] is None:
            record[4] = now


app = Flask(__name__)
memguard_flask.init_app(app)


@app.post("/jobs/<kind>")
def create(kind: str) -> Any:
    size = int(request.args.get("size", "1048576"))
    job_id = uuid.uuid4().hex
    job: dict[str, Any] = {"status": "running", "result": None}
    with _lock:
        _trace[job_id] = [float(size), time.monotonic(), None, None, None]
    STORES[kind][job_id] = job
    with _lock:
        _counts["created"] += 1
    _pool.submit(_work, kind, job_id, job, size)
    return jsonify({"id": job_id}), 202


@app.get("/jobs/<kind>/<job_id>")
def poll(kind: str, job_id: str) -> Any:
    job = STORES[kind].get(job_id)
    now = time.monotonic()
    with _lock:
        record = _trace.get(job_id)
        if record is not None and record[3] is None:
            record[3] = now
    if job is None:
        return jsonify({"error": "not found"}), 404
    return jsonify({"status": job["status"], "result": job["result"] is not None})


@app.get("/stats")
def stats() -> Any:
    with _lock:
        counts = dict(_counts)
    counts["pid"] = os.getpid()
    return jsonify(counts)


@app.get("/trace")
def trace() -> Any:
    with _lock:
        return jsonify({job_id: list(record) for job_id, record in _trace.items()})


memguard.manager.start()
