"""The seed app's three controllers and their six job stores, shared by both example apps.

Each controller creates background jobs (status ``pending`` -> ``running`` -> ``done``) whose
result is a large string, as an AI or deployment backend would produce, and lets clients poll
them. The stores are declared with ``@managed_store`` using the seed's numbers, and polling goes
through a ``@touches`` accessor so that a job being polled counts as used.

Knobs (environment):

- ``EXAMPLE_RESULT_KB``: size of each job's result in KiB (default 256).
- ``EXAMPLE_JOB_SECONDS``: how long a job "works" before its result is stored (default 0.2).
- ``MEMGUARD_POLICY``: a policy file to load (for example ``policies/default.toml``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any, Optional

import memguard
from memguard import managed_store, touches

RESULT_KB = int(os.environ.get("EXAMPLE_RESULT_KB", "256"))
JOB_SECONDS = float(os.environ.get("EXAMPLE_JOB_SECONDS", "0.2"))


class JobStore:
    """Jobs by id in a dict attribute, the way the seed's controllers kept them."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @touches
    def get_job(self, job_id: str) -> Optional[dict[str, Any]]:
        """The job, or None; polling marks it as used (LRU, max_idle)."""
        return self.jobs.get(job_id)

    def add_job(self, job: dict[str, Any]) -> None:
        self.jobs[job["id"]] = job

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Write a changed copy back, so memguard re-weighs the job (its age is kept)."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is not None:  # evicted meanwhile: nothing to update
                self.jobs[job_id] = {**job, **fields}


# The seed's numbers: max_age / max_jobs per store.
@managed_store(name="diagram", mapping="jobs", max_age="20m", max_jobs=50)
class DiagramJobs(JobStore):
    pass


@managed_store(name="iac", mapping="jobs", max_age="30m", max_jobs=50)
class IacJobs(JobStore):
    pass


@managed_store(name="infrastructure", mapping="jobs", max_age="45m", max_jobs=30)
class InfrastructureJobs(JobStore):
    pass


@managed_store(name="application", mapping="jobs", max_age="30m", max_jobs=30)
class ApplicationJobs(JobStore):
    pass


@managed_store(name="concept", mapping="jobs", max_age="40m", max_jobs=25)
class ConceptJobs(JobStore):
    pass


@managed_store(name="app_creation", mapping="jobs", max_age="60m", max_jobs=20)
class AppCreationJobs(JobStore):
    pass


class Controller:
    """One seed controller: a URL segment and its job stores by kind."""

    def __init__(self, segment: str, stores: dict[str, JobStore]) -> None:
        self.segment = segment
        self.stores = stores

    def create(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """Register a pending job; the caller runs `work` in the background."""
        job_id = uuid.uuid4().hex
        job = {"id": job_id, "kind": kind, "status": "pending", "params": params,
               "result": None, "error": None}
        self.stores[kind].add_job(job)
        return job

    def poll(self, kind: str, job_id: str) -> Optional[dict[str, Any]]:
        return self.stores[kind].get_job(job_id)

    def start(self, kind: str, job_id: str) -> None:
        self.stores[kind].update_job(job_id, status="running")

    def finish(self, kind: str, job_id: str) -> None:
        """Store the (large) result and mark the job done."""
        job = self.stores[kind].jobs.get(job_id)
        if job is None:
            return
        prompt = str(job["params"].get("prompt", ""))
        result = f"{kind} for {prompt!r}\n" + "x" * (RESULT_KB * 1024)
        self.stores[kind].update_job(job_id, status="done", result=result)

    def work(self, kind: str, job_id: str) -> None:
        """The whole job, synchronously (for a thread)."""
        self.start(kind, job_id)
        time.sleep(JOB_SECONDS)
        self.finish(kind, job_id)


def public(job: dict[str, Any]) -> dict[str, Any]:
    """What the app's own poll endpoint returns (the app's data, not memguard's)."""
    return {"id": job["id"], "kind": job["kind"], "status": job["status"],
            "result": job["result"], "error": job["error"]}


def build_controllers() -> dict[str, Controller]:
    """The seed's controllers: URL segment -> controller."""
    return {
        "ai": Controller("ai", {"diagram": DiagramJobs(), "iac": IacJobs()}),
        "deploy": Controller("deploy", {"infrastructure": InfrastructureJobs(),
                                        "application": ApplicationJobs()}),
        "magic": Controller("magic", {"concept": ConceptJobs(),
                                      "app_creation": AppCreationJobs()}),
    }


def load_policy_from_env() -> None:
    """Apply ``MEMGUARD_POLICY`` to the default manager when it is set."""
    path = os.environ.get("MEMGUARD_POLICY")
    if path:
        memguard.manager.load_policy(path)


def kind_of(name: str) -> str:
    """URL spelling (``app-creation``) -> store kind (``app_creation``)."""
    return name.replace("-", "_")
