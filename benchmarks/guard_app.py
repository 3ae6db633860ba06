"""A seed-like Flask app under sustained load: the guard's acceptance tests
(tests/acceptance/test_guard.py) and its benchmark (benchmarks/bench_guard.py) serve it.

Six job stores, as the seed's three controllers had. ``POST /jobs/<kind>?size=N&shape=S``
stores a job as ``running`` and hands it to a pool thread that "calls the AI" (sleeps
``GUARD_JOB_SECONDS``), builds a result of about N bytes and sets it by mutating the job in
place (``job["result"] = ...; job["status"] = "done"``), the way the seed's controllers did:
memguard never sees that write. ``shape`` is ``text`` (one string) or ``json`` (a parsed JSON
document: a list of small dicts, the kind of result that fragments pymalloc's arenas). Either
way N is the result's size in memory, so rates compare across shapes.

``GET /stats`` says how many jobs were created, finished, and lost while running (a job whose
worker found it gone from its store before it could finish: the guard must keep this at 0).
The monitor starts when the module is imported, which under gunicorn happens in the worker.

``GUARD_MODE=plain`` serves the same app without memguard, as it was before memguard: the stores
are plain dicts (no ``@managed_store``), no monitor, no memguard endpoints. The benchmark's
unguarded contenders run it so, with nothing else changed (same routes, same results, same
sizes).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask, jsonify, request
from result_text import text

import memguard
from memguard import managed_store
from memguard.index.estimate import estimate_size
from memguard.integrations import flask as memguard_flask

JOB_SECONDS = float(os.environ.get("GUARD_JOB_SECONDS", "0.2"))
MODE = os.environ.get("GUARD_MODE", "memguard")
if MODE not in ("memguard", "plain"):
    raise ValueError(f"GUARD_MODE={MODE!r}: expected 'memguard' (the default) or 'plain'")
KINDS = ("diagram", "iac", "infrastructure", "application", "concept", "app_creation")


class JobStore:
    """Jobs by id in a dict attribute, as the seed kept them."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}


STORES: dict[str, JobStore] = {}
for _kind in KINDS:
    _store_class = type(_kind, (JobStore,), {})
    if MODE == "memguard":
        _store_class = managed_store(name=_kind, mapping="jobs")(_store_class)
    STORES[_kind] = _store_class()

_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="ai")
_counts = {"created": 0, "finished": 0, "lost_running": 0}
_counts_lock = threading.Lock()


_JSON_TEXTS: dict[int, str] = {}
_JSON_STEP = 64 * 1024
_ROW = {"type": "aws_s3_bucket", "region": "eu-west-1", "tags": ["a", "b"], "size": 0}


def _row_bytes() -> float:
    """Bytes one parsed row takes in memory (what memguard's estimate says of 1,000)."""
    rows = json.loads(json.dumps([dict(_ROW, size=i, name=f"bucket-{i}") for i in range(1000)]))
    return estimate_size(rows) / len(rows)


_PER_ROW = _row_bytes()


def _json(size: int, salt: str) -> list[dict[str, Any]]:
    """About `size` bytes in memory of parsed JSON: a list of small dicts (many small
    objects), parsed afresh from a response text cached per 64 KiB of size, as an API would
    send it. (The text is about a quarter of what its parsed objects take.)"""
    bucket = max(1, size // _JSON_STEP)
    text = _JSON_TEXTS.get(bucket)
    if text is None:
        count = int(bucket * _JSON_STEP / _PER_ROW)
        rows = [dict(_ROW, size=i, name=f"bucket-{i}") for i in range(count)]
        text = _JSON_TEXTS.setdefault(bucket, json.dumps(rows))
    result: list[dict[str, Any]] = json.loads(text)
    result[0]["id"] = salt
    return result


def _work(kind: str, job_id: str, job: dict[str, Any], size: int, shape: str) -> None:
    time.sleep(JOB_SECONDS)  # the AI call
    result: Any = _json(size, job_id) if shape == "json" else text(size, job_id)
    store = STORES[kind]
    if job_id not in store.jobs:  # evicted while running: must never happen
        with _counts_lock:
            _counts["lost_running"] += 1
        return
    job["result"] = result  # mutated in place: the store does not see this write
    job["status"] = "done"
    with _counts_lock:
        _counts["finished"] += 1


app = Flask(__name__)
if MODE == "memguard":
    memguard_flask.init_app(app)


@app.post("/jobs/<kind>")
def create(kind: str) -> Any:
    size = int(request.args.get("size", "1048576"))
    shape = request.args.get("shape", "text")
    job_id = uuid.uuid4().hex
    job: dict[str, Any] = {"id": job_id, "status": "running", "result": None}
    STORES[kind].jobs[job_id] = job
    with _counts_lock:
        _counts["created"] += 1
    _pool.submit(_work, kind, job_id, job, size, shape)
    return jsonify({"id": job_id}), 202


@app.get("/jobs/<kind>/<job_id>")
def poll(kind: str, job_id: str) -> Any:
    job = STORES[kind].jobs.get(job_id)
    if job is None:
        return jsonify({"error": "not found"}), 404
    return jsonify({"id": job_id, "status": job["status"]})


@app.get("/stats")
def stats() -> Any:
    with _counts_lock:
        counts = dict(_counts)
    counts["pid"] = os.getpid()
    counts["running"] = sum(1 for store in STORES.values() for job in list(store.jobs.values())
                            if job.get("status") == "running")
    return jsonify(counts)


if MODE == "memguard":
    memguard.manager.start()

