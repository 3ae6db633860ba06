"""The seed app on Flask, with memguard integrated in three lines.

Run it (from the repository root; each is one command):

    python examples/flask_app.py                                  # dev server, port 5000
    gunicorn -c examples/gunicorn.conf.py examples.flask_app:app  # 2 workers, port 8000

Then:

    curl -X POST localhost:5000/api/ai/diagram -H 'content-type: application/json' \\
         -d '{"prompt": "a web app"}'                  # -> {"id": ..., "status": "pending"}
    curl localhost:5000/api/ai/diagram/<id>            # poll: pending -> running -> done
    curl localhost:5000/health                         # memguard: application/health+json
    curl localhost:5000/memory                         # stores, levels, cleanups
    curl localhost:5000/metrics                        # Prometheus
    MEMGUARD_TOKEN=s3cret python examples/flask_app.py # enables:
    curl -X POST localhost:5000/memory/cleanup -H 'Authorization: Bearer s3cret'

Controllers (see controllers.py): ``/api/ai/{diagram,iac}``,
``/api/deploy/{infrastructure,application}``, ``/api/magic/{concept,app-creation}``;
POST creates a job, ``GET .../<job_id>`` polls it. Environment: ``PORT`` (dev server),
``EXAMPLE_RESULT_KB``, ``EXAMPLE_JOB_SECONDS``, ``MEMGUARD_POLICY``, ``MEMGUARD_TOKEN``.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from flask import Flask, abort, jsonify, request
from flask.typing import ResponseReturnValue

if __package__ in (None, ""):  # `python examples/flask_app.py`: make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples.controllers import build_controllers, kind_of, load_policy_from_env, public
from memguard.integrations.flask import init_app

app = Flask(__name__)
controllers = build_controllers()

# memguard: the policy (optional), the endpoints and the monitor.
load_policy_from_env()
init_app(app)  # /health, /health/ready, /health/live, /memory, /memory/cleanup, /metrics


def _controller(segment: str, name: str) -> tuple[Any, str]:
    controller = controllers.get(segment)
    kind = kind_of(name)
    if controller is None or kind not in controller.stores:
        abort(404)
    return controller, kind


@app.post("/api/<segment>/<name>")
def create_job(segment: str, name: str) -> ResponseReturnValue:
    """Create a job and run it in a background thread; answer 202 with where to poll."""
    controller, kind = _controller(segment, name)
    params = request.get_json(silent=True)
    if params is not None and not isinstance(params, dict):
        return jsonify(error="the body must be a JSON object"), 400
    job = controller.create(kind, params or {})
    threading.Thread(target=controller.work, args=(kind, job["id"]), daemon=True,
                     name=f"job-{kind}").start()
    return jsonify(id=job["id"], status=job["status"],
                   poll=f"/api/{segment}/{name}/{job['id']}"), 202


@app.get("/api/<segment>/<name>/<job_id>")
def poll_job(segment: str, name: str, job_id: str) -> ResponseReturnValue:
    """The job's status and, once done, its result; 404 when unknown or evicted."""
    controller, kind = _controller(segment, name)
    job = controller.poll(kind, job_id)
    if job is None:
        return jsonify(error="no such job (unknown, or cleaned up)"), 404
    return jsonify(public(job))


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")), threaded=True)
