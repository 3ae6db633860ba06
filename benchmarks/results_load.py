"""Sustained load on ``results_app.py`` under gunicorn, every client coming back once for its
result: the driver the results-kept acceptance test (tests/acceptance/test_results_kept.py)
and the ``results`` benchmark (``bench_results.py``) share.

``results_server`` starts gunicorn (one gthread worker, 8 threads, 127.0.0.1, a free port)
serving the app with the guard's policy (limit 512MB, warning 250MB, emergency 300MB,
emergency_target 200MB). ``drive`` POSTs jobs of 2-6 MiB at a steady rate; each is polled once,
``POLL_AFTER`` seconds after its POST. A poll that finds the job gone (404) or its result
released counts as a result evicted before its read.

``reference`` replays the run as it happened (the app's ``/trace``: each result's size, when
it was ready, when it was polled, when memguard evicted it) with the clairvoyant reference
(``memguard.tools.reference``), at the same budget the stress workload gives it: the most
bytes of finished results memguard held at once (results ready and not yet evicted; the app
never deletes one itself).
"""

from __future__ import annotations

import contextlib
import heapq
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import httpx

from benchmarks.bench_guard import EMERGENCY, LIMIT, MB, POLICY, free_port
from memguard.tools.reference import Demand, ReferenceOutcome, clairvoyant

POLL_AFTER = 1.5
SIZES = (2 * MB, 6 * MB)
EMERGENCY_TARGET = 200 * MB
BOUND = EMERGENCY + LIMIT // 10
KINDS = ("diagram", "iac", "application")
STARTUP_SECONDS = 60.0

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def proc_status(pid: int, field: str) -> int:
    """A memory figure of /proc/PID/status (``VmHWM``, ``VmRSS``) in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {field} in /proc/{pid}/status")
    return int(match.group(1)) * 1024


class Server:
    """A running gunicorn serving ``results_app``: its `url` and the worker's `pid`."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process, self.url, self.log_path = process, url, log
        self.pid = 0

    def log(self, chars: int = 4000) -> str:
        """The end of the server's log."""
        return self.log_path.read_text(errors="replace")[-chars:]


@contextlib.contextmanager
def results_server(workdir: Path, name: str = "results") -> Iterator[Server]:
    """gunicorn serving ``results_app`` under `POLICY`, ready once ``/stats`` answers (bounded
    wait); always stopped: SIGTERM, then SIGKILL to its process group after 15 s."""
    from gunicorn.config import KNOWN_SETTINGS

    workdir.mkdir(parents=True, exist_ok=True)
    policy = workdir / f"{name}.toml"
    policy.write_text(POLICY)
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEMGUARD_", "GUNICORN", "PYTHONMALLOC"))}
    env.update(MEMGUARD_POLICY=str(policy), PYTHONUNBUFFERED="1",
               PYTHONPATH=f"{HERE}{os.pathsep}{ROOT}")
    argv = [sys.executable, "-m", "gunicorn"]
    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        argv.append("--no-control-socket")  # a file in $HOME that concurrent servers share
    argv += ["-w", "1", "-k", "gthread", "--threads", "8", "-b", f"127.0.0.1:{port}",
             "--access-logfile", "/dev/null", "--timeout", "120", "results_app:app"]
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        server = Server(process, f"http://127.0.0.1:{port}", log_path)
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"gunicorn exited with {process.returncode}:\n"
                                       f"{server.log()}")
                with contextlib.suppress(httpx.HTTPError):
                    answer = httpx.get(f"{server.url}/stats", timeout=1.0)
                    if answer.status_code == 200:
                        server.pid = int(answer.json()["pid"])
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn not ready within {STARTUP_SECONDS:g} s:\n"
                                       f"{server.log()}")
                time.sleep(0.1)
            yield server
        finally:
            if process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(15)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # the worker too, if it lingers
            process.wait(5)


class Poller(threading.Thread):
    """Polls each job once, `POLL_AFTER` seconds after its POST, and sorts the answers."""

    def __init__(self, url: str) -> None:
        super().__init__(name="poller", daemon=True)
        self.url = url
        self.due: list[tuple[float, int, str, str]] = []
        self.lock = threading.Condition()
        self.outcomes: Counter[str] = Counter()
        self.by_job: dict[str, str] = {}
        self.late: list[float] = []
        self.closing = False
        self.seq = 0

    def add(self, posted: float, kind: str, job_id: str) -> None:
        with self.lock:
            self.seq += 1
            heapq.heappush(self.due, (posted + POLL_AFTER, self.seq, kind, job_id))
            self.lock.notify()

    def close(self) -> None:
        with self.lock:
            self.closing = True
            self.lock.notify()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            while True:
                with self.lock:
                    while True:
                        if self.due:
                            wait = self.due[0][0] - time.monotonic()
                            if wait <= 0:
                                due, _, kind, job_id = heapq.heappop(self.due)
                                break
                            self.lock.wait(wait)
                        elif self.closing:
                            return
                        else:
                            self.lock.wait(0.5)
                self.late.append(time.monotonic() - due)
                response = client.get(f"/jobs/{kind}/{job_id}")
                if response.status_code == 404:
                    outcome = "evicted"
                elif response.status_code != 200:
                    outcome = f"http {response.status_code}"
                else:
                    body = response.json()
                    if body["status"] != "done":
                        outcome = "not done yet"
                    elif body["result"]:
                        outcome = "read"
                    else:
                        outcome = "evicted"  # released: evicted, still held
                self.outcomes[outcome] += 1
                self.by_job[job_id] = outcome


def drive(server: Server, *, rate: float, seconds: float, seed: int = 21) -> dict[str, Any]:
    """POST 2-6 MiB jobs at `rate` bytes per second for `seconds` (catching up at most 1 s
    when the server lags); poll each once. The worker's RSS is read before the first POST
    (`baseline`); the app's trace is fetched at the end."""
    rng = random.Random(seed)
    statuses: Counter[int] = Counter()
    baseline = proc_status(server.pid, "VmRSS")
    poller = Poller(server.url)
    poller.start()
    sent = 0
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        start = due = time.monotonic()
        count = 0
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            size = rng.randint(*SIZES)
            kind = KINDS[count % len(KINDS)]
            posted = time.monotonic()
            response = client.post(f"/jobs/{kind}", params={"size": size})
            statuses[response.status_code] += 1
            if response.status_code == 202:
                poller.add(posted, kind, response.json()["id"])
            sent += size
            count += 1
            due = max(due + size / rate, time.monotonic() - 1.0)
        elapsed = time.monotonic() - start
        poller.close()
        poller.join(timeout=POLL_AFTER + 30)
        if poller.is_alive():
            raise RuntimeError("the poller did not finish")
        stats = client.get("/stats").json()
        memory = client.get("/memory").json()
        trace = client.get("/trace").json()
    polls = sum(poller.outcomes.values())
    return {"rate": rate, "statuses": statuses, "sent": sent, "elapsed": elapsed,
            "stats": stats, "memory": memory, "peak": proc_status(server.pid, "VmHWM"),
            "baseline": baseline, "outcomes": poller.outcomes, "by_job": poller.by_job,
            "trace": trace, "polls": polls,
            "evicted_share": poller.outcomes["evicted"] / max(polls, 1),
            "late": max(poller.late, default=0.0)}


def demands(result: dict[str, Any]) -> list[Demand]:
    """The run's finished results as the clairvoyant reference replays them: ready when the
    app finished it, read once at its poll, wanted when a client came back for it (every
    polled job; a poll before the result was ready is no read of it)."""
    out = []
    for job_id, (size, _, ready, polled, _) in result["trace"].items():
        if ready is None:
            continue
        reads = () if polled is None else (float(polled),)
        out.append(Demand(key=job_id, ready=float(ready), size=int(size), reads=reads,
                          wanted=polled is not None))
    return out


def held_peak(result: dict[str, Any]) -> int:
    """The most bytes of finished results memguard held at once: each result from when it was
    ready until memguard evicted it (the app deletes none itself)."""
    changes: list[tuple[float, int]] = []
    for size, _, ready, _, evicted in result["trace"].values():
        if ready is None:
            continue
        changes.append((float(ready), int(size)))
        if evicted is not None:
            changes.append((max(float(evicted), float(ready)), -int(size)))
    held = most = 0
    for _, change in sorted(changes):  # a release before an arrival at a tie
        held += change
        most = max(most, held)
    return most


def reference(result: dict[str, Any], budget: Optional[int] = None) -> ReferenceOutcome:
    """The clairvoyant reference on the run's trace, at `budget` bytes of results (default:
    `held_peak`, the stress workload's definition: "at the same peak")."""
    return clairvoyant(demands(result), held_peak(result) if budget is None else budget)


def lost_share(result: dict[str, Any]) -> float:
    """memguard's share of the polls that found a finished result which then was evicted,
    counted as the reference counts: of the polls that came after the result was ready."""
    trace = result["trace"]
    wanted = lost = 0
    for job_id, outcome in result["by_job"].items():
        record = trace.get(job_id)
        if record is None or record[2] is None or outcome == "not done yet":
            continue
        wanted += 1
        lost += outcome == "evicted"
    return lost / wanted if wanted else 0.0


def report(name: str, result: dict[str, Any]) -> str:
    """One line: the rate, the jobs, the polls and what they found, the peak."""
    stats, memory = result["stats"], result["memory"]
    emergencies = memory["totals"]["cleanups"].get("emergency", 0)
    rate = result["sent"] / result["elapsed"] / MB
    return (f"{name}: {rate:.1f} MiB/s for {result['elapsed']:.0f}s, {stats['created']} jobs "
            f"({stats['lost_running']} lost while running), polls {dict(result['outcomes'])}: "
            f"{result['evicted_share']:.2%} evicted before their read, peak "
            f"{result['peak'] / MB:.1f}MB (bound {BOUND / MB:.1f}MB, baseline "
            f"{result['baseline'] / MB:.1f}MB), {emergencies} emergency cleanups, statuses "
            f"{dict(result['statuses'])}, polls late by up to {result['late']:.2f}s")
