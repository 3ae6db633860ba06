"""The seed app on FastAPI, with memguard integrated in two lines.

Run it (from the repository root):

    uvicorn examples.fastapi_app:app          # port 8000

Then:

    curl -X POST localhost:8000/api/ai/diagram -H 'content-type: application/json' \\
         -d '{"prompt": "a web app"}'             # -> {"id": ..., "status": "pending"}
    curl localhost:8000/api/ai/diagram/<id>       # poll: pending -> running -> done
    curl localhost:8000/health                    # memguard: application/health+json
    curl localhost:8000/memory                    # stores, levels, cleanups
    curl localhost:8000/metrics                   # Prometheus
    MEMGUARD_TOKEN=s3cret uvicorn examples.fastapi_app:app   # enables:
    curl -X POST localhost:8000/memory/cleanup -H 'Authorization: Bearer s3cret'

Controllers (see controllers.py): ``/api/ai/{diagram,iac}``,
``/api/deploy/{infrastructure,application}``, ``/api/magic/{concept,app-creation}``;
POST creates a job that runs as an asyncio task, ``GET .../{job_id}`` polls it. Environment:
``EXAMPLE_RESULT_KB``, ``EXAMPLE_JOB_SECONDS``, ``MEMGUARD_POLICY``, ``MEMGUARD_TOKEN``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated, Any, Optional

from fastapi import Body, FastAPI, HTTPException

if __package__ in (None, ""):  # imported as a top-level module: make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples.controllers import (
    JOB_SECONDS,
    Controller,
    build_controllers,
    kind_of,
    load_policy_from_env,
    public,
)
from memguard.integrations.fastapi import router

app = FastAPI(title="memguard example: the seed app on FastAPI")
controllers = build_controllers()
_tasks: set[asyncio.Task[None]] = set()  # strong references until each job ends

# memguard: the policy (optional), the endpoints and the monitor.
load_policy_from_env()
app.include_router(router())  # /health, /health/ready, /health/live, /memory, /metrics ...


def _controller(segment: str, name: str) -> tuple[Controller, str]:
    controller = controllers.get(segment)
    kind = kind_of(name)
    if controller is None or kind not in controller.stores:
        raise HTTPException(404, "no such controller or job kind")
    return controller, kind


async def _work(controller: Controller, kind: str, job_id: str) -> None:
    controller.start(kind, job_id)
    await asyncio.sleep(JOB_SECONDS)
    controller.finish(kind, job_id)


@app.post("/api/{segment}/{name}", status_code=202)
async def create_job(segment: str, name: str,
                     params: Annotated[Optional[dict[str, Any]], Body()] = None) -> dict[str, Any]:
    """Create a job and run it as an asyncio task; answer 202 with where to poll."""
    controller, kind = _controller(segment, name)
    job = controller.create(kind, params or {})
    task = asyncio.create_task(_work(controller, kind, job["id"]))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return {"id": job["id"], "status": job["status"],
            "poll": f"/api/{segment}/{name}/{job['id']}"}


@app.get("/api/{segment}/{name}/{job_id}")
async def poll_job(segment: str, name: str, job_id: str) -> dict[str, Any]:
    """The job's status and, once done, its result; 404 when unknown or evicted."""
    controller, kind = _controller(segment, name)
    job = controller.poll(kind, job_id)
    if job is None:
        raise HTTPException(404, "no such job (unknown, or cleaned up)")
    return public(job)
