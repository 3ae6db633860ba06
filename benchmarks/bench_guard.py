"""Case 9, the guard under sustained load: peak overshoot above ``emergency`` against the rate.

Issue 10's benchmark. A real gunicorn (one gthread worker, 8 threads, 127.0.0.1, a free port)
serves the seed-like app of ``benchmarks/guard_app.py``: six job stores, each job stored
``running``, its result (0.5-4 MB of text, 2.25 MB on average) built after a simulated AI call
of 0.2 s and set by mutating the job. A driver POSTs jobs at a steady pace so that results
arrive at a sustained rate (5, 10, 25, 50, 100 MB/s), while a watcher polls the gunicorn
master's children every 0.1 s (``VmHWM`` and ``VmRSS`` from /proc). A cell lasts 20 s, or
longer at low rates: long enough to send ``VOLUME`` (512 MB, the limit) of results, so that
an unguarded worker ends past the limit at every rate and each line of the table says
something about the guard (at 5 MB/s, 20 s would never reach the emergency line). Three
contenders at every rate, one after the other in the same run:

- **memguard**: the app as it is, under test_guard.py's policy (limit 512MB, warning 250MB,
  emergency 300MB, emergency_target 200MB, defaults otherwise);
- **no guard**: the same app with ``GUARD_MODE=plain`` (plain dict stores, no monitor);
- **max_requests**: the plain app under ``gunicorn --max-requests N --max-requests-jitter J``,
  the recycling users configure instead. N is chosen so that recycling keeps a worker under
  the same emergency line at 10 MB/s: a request leaves 2.25 MB on average in the worker, which
  starts at about 45 MB, so (300 - 45) / 2.25 = 113 requests fit; N + J = 100 + 10 stays just
  under that. (A request count is blind to the rate, so the same N holds at every rate; what
  recycling costs is elsewhere: the jobs running in the worker when it goes, the results its
  clients never fetch, and the reboot.)

The figure is the worker's peak RSS above ``emergency``, as % of the limit (negative: it
stayed under the line); with recycling, the highest peak of all the workers seen (each
exiting worker also reports its own ``VmHWM`` through the ``worker_exit`` hook of
``benchmarks/guard_gunicorn.py``). Also counted: running jobs lost (a job evicted while
running, or still running in a worker that exited) and 5xx answers. An unguarded worker is not
allowed to take the machine: once any worker passes ``CEILING`` (1.5 GiB) the driver stops the
cell early and the peak is a lower bound (reported as ">=").

Run it alone with ``python -m benchmarks --only guard``; ``python -m benchmarks.bench_guard
--table FILE.json`` prints the rate x contender table of a saved run (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import httpx
import psutil

from benchmarks import case, row, target

MB = 1 << 20
LIMIT = 512 * MB
EMERGENCY = 300 * MB
POLICY = """
[memory]
limit = "512MB"
warning = "250MB"
emergency = "300MB"
emergency_target = "200MB"
"""
RATES = (5, 10, 25, 50, 100)
QUICK_RATES = (50, 100)
SECONDS = 20.0  # the shortest cell
QUICK_SECONDS = 5.0
VOLUME = 512 * MB  # results a cell sends at least (it lasts max(SECONDS, VOLUME / rate))
QUICK_VOLUME = 384 * MB
SIZES = (MB // 2, 4 * MB)
MAX_REQUESTS = (100, 10)
CEILING = 1536 * MB
BOUND_PERCENT = 10.0  # issue 10: peak <= emergency + 10% of the limit
KINDS = ("diagram", "iac", "infrastructure", "application", "concept", "app_creation")
CONTENDERS = ("memguard", "no guard", "max_requests")
STARTUP_SECONDS = 60.0
POLL_SECONDS = 0.1

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (closed again for gunicorn to bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_memory(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of a process in bytes, from the kernel; (0, 0) once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    figures = dict(re.findall(r"^(VmHWM|VmRSS):\s+(\d+) kB", status, re.MULTILINE))
    return int(figures.get("VmHWM", 0)) * 1024, int(figures.get("VmRSS", 0)) * 1024


def gunicorn_argv(port: int, *extra: str) -> list[str]:
    """gunicorn with one gthread worker and the exit hook, without its control socket."""
    from gunicorn.config import KNOWN_SETTINGS

    argv = [sys.executable, "-m", "gunicorn"]
    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        argv.append("--no-control-socket")  # a file in $HOME that concurrent servers share
    return [*argv, "-c", str(HERE / "guard_gunicorn.py"), "-w", "1", "-k", "gthread",
            "--threads", "8", "-b", f"127.0.0.1:{port}", "--access-logfile", "/dev/null",
            "--timeout", "120", *extra, "guard_app:app"]


@contextlib.contextmanager
def gunicorn(contender: str, workdir: Path, max_requests: tuple[int, int]) -> Iterator[
        tuple[subprocess.Popen[bytes], str, Path]]:
    """A gunicorn master serving the app as `contender` wants it: (process, url, log path).

    Ready once ``GET /stats`` answers (bounded wait); always stopped: SIGTERM, then SIGKILL
    to its process group after 15 s.
    """
    port = free_port()
    policy = workdir / "guard.toml"
    policy.write_text(POLICY)
    exits = workdir / "exits"
    exits.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEMGUARD_", "GUNICORN", "PYTHONMALLOC", "GUARD_"))}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=f"{HERE}{os.pathsep}{ROOT}",
               GUARD_EXIT_DIR=str(exits), MEMGUARD_POLICY=str(policy))
    extra: list[str] = []
    if contender != "memguard":
        env["GUARD_MODE"] = "plain"
    if contender == "max_requests":
        extra = ["--max-requests", str(max_requests[0]),
                 "--max-requests-jitter", str(max_requests[1])]
    log_path = workdir / "server.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(gunicorn_argv(port, *extra), cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"gunicorn ({contender}) exited with "
                                       f"{process.returncode}: {tail(log_path)}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/stats", timeout=1.0).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn ({contender}) not ready within "
                                       f"{STARTUP_SECONDS:g} s: {tail(log_path)}")
                time.sleep(0.1)
            yield process, url, exits
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    pass
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # the worker too, if it lingers
            process.wait(5)


def tail(path: Path, chars: int = 2000) -> str:
    """The end of a server log, for error messages."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


class Watcher(threading.Thread):
    """Polls the master's children every POLL_SECONDS: each worker's peak RSS (VmHWM), the
    highest sum of their RSS at one poll, and `over` set once a worker passes `ceiling`."""

    def __init__(self, master: int, ceiling: int) -> None:
        super().__init__(name="guard-watcher", daemon=True)
        self.master, self.ceiling = master, ceiling
        self.peaks: dict[int, int] = {}
        self.total_peak = 0
        self.over = threading.Event()
        self.done = threading.Event()
        self.error: Optional[BaseException] = None

    def poll(self) -> None:
        """One look at every child of the master."""
        try:
            children = psutil.Process(self.master).children()
        except psutil.Error:
            return
        total = 0
        for child in children:
            hwm, rss = proc_memory(child.pid)
            self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), hwm)
            total += rss
            if hwm >= self.ceiling:
                self.over.set()
        self.total_peak = max(self.total_peak, total)

    def run(self) -> None:
        try:
            while not self.done.wait(POLL_SECONDS):
                self.poll()
        except BaseException as error:  # reported by stop(): never silent
            self.error = error
            self.over.set()

    def stop(self) -> None:
        """Last look, end the thread, and raise what it met, if anything."""
        self.poll()
        self.done.set()
        self.join(5)
        if self.error is not None:
            raise RuntimeError(f"the watcher failed: {self.error!r}") from self.error


def drive(url: str, *, rate: float, seconds: float, stop: threading.Event,
          seed: int = 7) -> dict[str, Any]:
    """POST jobs so that results arrive at `rate` bytes/s for `seconds`, at a steady pace
    (catching up at most 1 s when the server lags), until `stop` is set."""
    rng = random.Random(seed)
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    sent = 0
    with httpx.Client(base_url=url, timeout=30.0) as client:
        start = due = time.monotonic()
        count = 0
        while not stop.is_set():
            now = time.monotonic()
            if now - start >= seconds:
                break
            if now < due:
                time.sleep(min(due - now, 0.05))
                continue
            size = rng.randint(*SIZES)
            try:
                response = client.post(f"/jobs/{KINDS[count % len(KINDS)]}",
                                       params={"size": size, "shape": "text"})
                statuses[response.status_code] += 1
                if response.status_code == 202:
                    sent += size
            except httpx.HTTPError as error:
                errors[type(error).__name__] += 1
            count += 1
            due = max(due + size / rate, time.monotonic() - 1.0)
        elapsed = time.monotonic() - start
    return {"statuses": statuses, "errors": errors, "sent": sent, "elapsed": elapsed}


def measure(contender: str, rate_mb: float, seconds: float, *,
            max_requests: tuple[int, int] = MAX_REQUESTS, ceiling: int = CEILING,
            ) -> dict[str, Any]:
    """One cell: `contender` driven at `rate_mb` MB/s for `seconds`; its figures."""
    with tempfile.TemporaryDirectory(prefix="memguard-bench-guard-") as tmp, \
            gunicorn(contender, Path(tmp), max_requests) as (process, url, exits):
        watcher = Watcher(process.pid, ceiling)
        watcher.start()
        try:
            load = drive(url, rate=rate_mb * MB, seconds=seconds, stop=watcher.over)
            if not watcher.over.is_set():
                time.sleep(1.0)  # the last jobs finish and set their results
            with httpx.Client(base_url=url, timeout=30.0) as client:
                stats = client.get("/stats").json()
                memory = client.get("/memory").json() if contender == "memguard" else None
            time.sleep(2 * POLL_SECONDS)
        finally:
            watcher.stop()
        exited = {int(record["pid"]): record for record in
                  (json.loads(path.read_text()) for path in exits.glob("*.json"))}
        log = tail(Path(tmp) / "server.log", 100_000)
    peaks = dict(watcher.peaks)
    for pid, record in exited.items():
        peaks[pid] = max(peaks.get(pid, 0), int(record["peak"]))
    live = int(stats["pid"])
    lost = sum(int(r["running_at_exit"]) + int(r["lost_running"]) for r in exited.values())
    if live not in exited:
        lost += int(stats["lost_running"])
    statuses: Counter[int] = load["statuses"]
    peak = max(peaks.values(), default=0)
    return {
        "contender": contender,
        "rate": rate_mb,
        "seconds": round(load["elapsed"], 2),
        "sent_rate": load["sent"] / load["elapsed"] / MB if load["elapsed"] else 0.0,
        "stopped_at_ceiling": watcher.over.is_set(),
        "peak": peak,
        "overshoot": 100.0 * (peak - EMERGENCY) / LIMIT,
        "total_rss_peak": watcher.total_peak,
        "workers": len(peaks),
        "accepted": statuses.get(202, 0),
        "status_5xx": sum(n for code, n in statuses.items() if code >= 500),
        "statuses": {str(code): n for code, n in sorted(statuses.items())},
        "errors": dict(load["errors"]),
        "lost_running": lost,
        "emergencies": None if memory is None else
        memory["totals"]["cleanups"].get("emergency", 0),
        "cleanup_lines": log.count("Memory cleanup: Cleaned"),
        "max_requests": list(max_requests) if contender == "max_requests" else None,
    }


def label(contender: str, max_requests: tuple[int, int]) -> str:
    """The contender's name in tables."""
    if contender == "max_requests":
        return f"max_requests {max_requests[0]}+{max_requests[1]}"
    return contender


def peak_text(cell: Mapping[str, Any]) -> str:
    """`311 MiB`, or `>= 1536 MiB` when the cell stopped at the ceiling."""
    prefix = ">= " if cell["stopped_at_ceiling"] else ""
    return f"{prefix}{cell['peak'] / MB:.0f} MiB"


def note(cell: Mapping[str, Any]) -> str:
    """What a row says beside its figure."""
    parts = [f"peak {peak_text(cell)} ({100 * cell['peak'] / LIMIT:.0f}% of limit)",
             f"{cell['sent_rate']:.1f} MB/s sent for {cell['seconds']:.0f} s"
             + (" (stopped at the ceiling)" if cell["stopped_at_ceiling"] else ""),
             f"{cell['accepted']} jobs, {cell['lost_running']} running lost, "
             f"{cell['status_5xx']} 5xx"]
    if cell["errors"]:
        parts.append("errors " + ", ".join(f"{k} x{v}" for k, v in cell["errors"].items()))
    if cell["emergencies"] is not None:
        parts.append(f"{cell['emergencies']} emergency cleanups")
    if cell["workers"] > 1:
        parts.append(f"{cell['workers']} workers, highest sum of RSS "
                     f"{cell['total_rss_peak'] / MB:.0f} MiB")
    return "; ".join(parts)


def run(quick: bool, *, rates: Optional[Sequence[float]] = None,
        seconds: Optional[float] = None, volume: Optional[int] = None,
        max_requests: tuple[int, int] = MAX_REQUESTS, contenders: Sequence[str] = CONTENDERS,
        ceiling: int = CEILING) -> dict[str, Any]:
    """Measure case 9: every contender at every rate, in one run. A cell lasts
    max(`seconds`, `volume` / rate)."""
    title = "9. guard: peak overshoot above emergency vs sustained rate"
    try:
        import flask  # noqa: F401
        import gunicorn as gunicorn_module  # noqa: F401
    except ImportError as error:
        return case("guard", title, rows=[], skipped=f"needs flask and gunicorn ({error})")
    rates = tuple(rates or (QUICK_RATES if quick else RATES))
    seconds = seconds or (QUICK_SECONDS if quick else SECONDS)
    volume = (QUICK_VOLUME if quick else VOLUME) if volume is None else volume
    cells = [measure(contender, rate, max(seconds, volume / (rate * MB)),
                     max_requests=max_requests, ceiling=ceiling)
             for rate in rates for contender in contenders]
    rows = []
    for rate in rates:
        here = {cell["contender"]: cell for cell in cells if cell["rate"] == rate}
        for contender, cell in here.items():
            ratios = [] if contender != "memguard" else [
                (f"{label(peer, max_requests)} peak", cell["peak"] / other["peak"])
                for peer, other in here.items() if peer != contender and other["peak"] > 0]
            rows.append(row(f"{rate:g} MB/s: {label(contender, max_requests)}",
                            cell["overshoot"], "%", ratios=ratios, note=note(cell)))
    guarded = [cell for cell in cells if cell["contender"] == "memguard"]
    targets = []
    if guarded:
        worst = max(guarded, key=lambda cell: cell["overshoot"])
        targets = [
            target("memguard peak above emergency, % of limit (highest over rates)",
                   worst["overshoot"], "<=", BOUND_PERCENT, "%",
                   detail=f"at {worst['rate']:g} MB/s, peak {peak_text(worst)}"),
            target("running jobs lost by memguard (all rates)",
                   float(sum(cell["lost_running"] for cell in guarded)), "<=", 0.0, "jobs"),
            target("5xx answers under memguard (all rates)",
                   float(sum(cell["status_5xx"] for cell in guarded)), "<=", 0.0, "answers"),
        ]
    notes = [
        "Figure: worker peak RSS (VmHWM) minus emergency (300 MB), as % of the limit (512 MB); "
        "negative = stayed under the line. Ratios: memguard's peak over each peer's, same rate.",
        f"max_requests {max_requests[0]}+{max_requests[1]}: gunicorn --max-requests "
        f"{max_requests[0]} --max-requests-jitter {max_requests[1]} on the plain app; peak = "
        "highest over all the workers seen.",
        f"A cell lasts max({seconds:g} s, {volume / MB:.0f} MB / rate). "
        f"Unguarded cells stop early once a worker passes {ceiling / MB:.0f} MiB (peak shown "
        "as '>=').",
    ]
    params = {"rates": list(rates), "seconds": seconds, "volume": volume,
              "policy": POLICY.strip(),
              "sizes": list(SIZES), "max_requests": list(max_requests), "ceiling": ceiling,
              "contenders": list(contenders), "cells": cells}
    return case("guard", title, rows=rows, targets=targets, notes=notes, params=params)


def table(result: Mapping[str, Any]) -> str:
    """The run as a Markdown table, one line per rate, one column per contender."""
    params = result["params"]
    max_requests = tuple(params["max_requests"])
    contenders = params["contenders"]
    names = " | ".join(label(contender, max_requests) for contender in contenders)
    lines = [f"| rate (sent, MB/s), cell | {names} |",
             "|---" * (len(contenders) + 1) + "|"]
    for rate in params["rates"]:
        here = {cell["contender"]: cell for cell in params["cells"] if cell["rate"] == rate}
        sent = "/".join(f"{here[c]['sent_rate']:.0f}" for c in contenders if c in here)
        cells = []
        for contender in contenders:
            cell = here.get(contender)
            if cell is None:
                cells.append("")
                continue
            sign = ">= " if cell["stopped_at_ceiling"] else ""
            text = (f"**{sign}{cell['overshoot']:+.1f}%** ({peak_text(cell)}); "
                    f"{cell['lost_running']} lost, {cell['status_5xx']} 5xx")
            if cell["emergencies"]:
                text += f"; {cell['emergencies']} emergency cleanups"
            if cell["workers"] > 1:
                text += f"; {cell['workers']} workers"
            if cell["stopped_at_ceiling"]:
                text += f"; stopped at {cell['seconds']:.0f} s"
            cells.append(text)
        longest = max(cell["seconds"] for cell in here.values())
        lines.append(f"| {rate:g} MB/s ({sent}), {longest:.0f} s | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``--table FILE.json``: the guard case of a saved run as a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_guard")
    parser.add_argument("--table", type=Path, required=True, metavar="FILE",
                        help="a JSON report written by python -m benchmarks")
    args = parser.parse_args(argv)
    report = json.loads(args.table.read_text())
    found = [c for c in report.get("cases", ()) if c.get("id") == "guard" and c.get("rows")]
    if not found:
        parser.error(f"{args.table}: no guard case with results in this report")
    print(table(found[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
