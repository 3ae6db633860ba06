"""Issue 23, item 9: a Flask or FastAPI app written from the docs answers 503 with
Retry-After, not 500, while its Redis store is unreachable (real redis-server, stopped)."""

from __future__ import annotations

from typing import Any

from memguard import MemoryManager, Policy, managed_store
from memguard.redis import RedisStore
from memguard.testing import FakeProbe
from tests.redis.conftest import RedisServer


def jobs_store(url: str) -> Any:
    manager = MemoryManager(Policy(), probe=FakeProbe("100MB"))

    @managed_store(name="jobs", manager=manager)
    class Jobs(RedisStore):
        pass

    return manager, Jobs(url)


def test_flask_answers_503_with_retry_after(own_redis: RedisServer) -> None:
    from flask import Flask, jsonify

    from memguard.integrations.flask import init_app

    manager, jobs = jobs_store(own_redis.url)
    jobs["a"] = {"status": "done"}
    app = Flask(__name__)

    @app.get("/jobs/<job_id>")
    def poll(job_id: str) -> Any:
        job = jobs.get(job_id)
        return (jsonify(job), 200) if job is not None else ({"error": "unknown"}, 404)

    init_app(app, manager, prefix="/ops", start=False)
    client = app.test_client()
    assert client.get("/jobs/a").get_json() == {"status": "done"}
    own_redis.stop()
    answer = client.get("/jobs/a")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.get_json()["reason"] == "redis unavailable"
    assert "unavailable during read" in answer.get_json()["detail"]


def test_flask_app_handler_wins(own_redis: RedisServer) -> None:
    from flask import Flask

    from memguard.errors import RedisUnavailable
    from memguard.integrations.flask import init_app

    manager, jobs = jobs_store(own_redis.url)
    app = Flask(__name__)
    app.register_error_handler(RedisUnavailable, lambda error: ("mine", 502))
    app.add_url_rule("/n", "n", lambda: str(len(jobs)))
    init_app(app, manager, start=False)
    own_redis.stop()
    assert app.test_client().get("/n").status_code == 502


def test_fastapi_answers_503_with_retry_after(own_redis: RedisServer) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from memguard.integrations.fastapi import init_app

    manager, jobs = jobs_store(own_redis.url)
    jobs["a"] = {"status": "done"}
    app = FastAPI()

    @app.get("/jobs/{job_id}")
    def poll(job_id: str) -> Any:
        return jobs.get(job_id)

    init_app(app, manager, prefix="/ops", start=False)
    client = TestClient(app)
    assert client.get("/jobs/a").json() == {"status": "done"}
    own_redis.stop()
    answer = client.get("/jobs/a")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert answer.json()["reason"] == "redis unavailable"
