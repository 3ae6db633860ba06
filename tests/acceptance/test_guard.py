"""The guard holds under sustained load: a real gunicorn worker, real megabytes, real RSS.

Each case starts gunicorn (one gthread worker) serving the seed-like app ``benchmarks/guard_app.py``
on 127.0.0.1, then sends job requests at a steady rate for ``SECONDS`` (30 s: long enough for
the sampling, the controller's rounds and its back-off to matter; the periodic pass, every 2
minutes by default, does not run at all after the first). Each job's result is built in the
worker and set by mutation after a simulated AI call. At the end the worker's peak RSS is read
from the kernel (``VmHWM`` in /proc/PID/status), and the app says how many jobs it lost while
they were running.

The bound (issue 10): peak <= emergency + 10% of the limit, 0 running jobs lost, 0 5xx.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_servers import ROOT, free_port, gunicorn_argv, serve

from benchmarks.bench_guard import EMERGENCY, LIMIT, MB, POLICY

pytestmark = pytest.mark.slow

SECONDS = 30.0
BOUND = EMERGENCY + LIMIT // 10
KINDS = ("diagram", "iac", "infrastructure", "application", "concept", "app_creation")


def peak_rss(pid: int) -> int:
    """The process's peak resident set size so far, from the kernel."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) * 1024


def drive(url: str, *, rate: float, sizes: tuple[int, int], shape: str,
          seconds: float = SECONDS, seed: int = 7) -> dict[str, Any]:
    """POST jobs at `rate` bytes per second of results for `seconds`, at a steady pace."""
    rng = random.Random(seed)
    statuses: Counter[int] = Counter()
    sent_bytes = 0
    with httpx.Client(base_url=url, timeout=30.0) as client:
        start = time.monotonic()
        due = start
        count = 0
        while True:
            now = time.monotonic()
            if now - start >= seconds:
                break
            if now < due:
                time.sleep(due - now)
            size = rng.randint(*sizes)
            kind = KINDS[count % len(KINDS)]
            response = client.post(f"/jobs/{kind}", params={"size": size, "shape": shape})
            statuses[response.status_code] += 1
            sent_bytes += size
            count += 1
            due = max(due + size / rate, time.monotonic() - 1.0)  # catch up at most 1 s
        elapsed = time.monotonic() - start
        time.sleep(1.0)  # the last jobs finish
        stats = client.get("/stats").json()
        memory = client.get("/memory").json()
    return {"statuses": statuses, "sent_bytes": sent_bytes, "elapsed": elapsed,
            "stats": stats, "memory": memory, "peak": peak_rss(int(stats["pid"]))}


def guard_server(tmp_path: Path, name: str, policy: Path, **environ: str) -> Any:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEMGUARD_", "GUNICORN", "PYTHONMALLOC"))}
    env.update(MEMGUARD_POLICY=str(policy), PYTHONUNBUFFERED="1",
               PYTHONPATH=f"{ROOT / 'benchmarks'}{os.pathsep}{ROOT}", **environ)
    argv = gunicorn_argv("-w", "1", "-k", "gthread", "--threads", "8", "-b",
                         f"127.0.0.1:{port}", "--access-logfile", "/dev/null",
                         "--timeout", "120", "guard_app:app")
    return serve(name, argv, port, env, tmp_path / f"{name}.log")


def report(name: str, result: dict[str, Any]) -> str:
    stats, memory = result["stats"], result["memory"]
    emergencies = memory["totals"]["cleanups"].get("emergency", 0)
    rate = result["sent_bytes"] / result["elapsed"] / MB
    return (f"{name}: {rate:.1f} MB/s for {result['elapsed']:.0f}s, "
            f"{stats['created']} jobs ({stats['finished']} finished, {stats['lost_running']} "
            f"lost while running), peak {result['peak'] / MB:.1f}MB (bound "
            f"{BOUND / MB:.1f}MB), {emergencies} emergency cleanups, statuses "
            f"{dict(result['statuses'])}")


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "guard.toml"
    path.write_text(POLICY)
    return path


@pytest.mark.parametrize(("rate_mb", "sizes", "shape", "allocator"), [
    (10, (MB // 2, 4 * MB), "text", "pymalloc"),
    (25, (MB // 2, 4 * MB), "text", "pymalloc"),
    (50, (MB // 2, 4 * MB), "text", "pymalloc"),
    (25, (MB // 10, MB), "json", "malloc"),
], ids=["10MBps-text", "25MBps-text", "50MBps-text", "25MBps-json-malloc"])
def test_peak_stays_within_emergency_plus_10pct_of_limit(
        tmp_path: Path, policy: Path, rate_mb: int, sizes: tuple[int, int],
        shape: str, allocator: str) -> None:
    """Parsed-JSON results run with PYTHONMALLOC=malloc, the configuration docs/monitor.md
    recommends for them: pymalloc keeps freed small objects in arenas that go back to the
    system only when wholly empty (see the next test)."""
    with guard_server(tmp_path, f"guard-{rate_mb}-{shape}", policy,
                      PYTHONMALLOC=allocator) as server:
        result = drive(server.url, rate=rate_mb * MB, sizes=sizes, shape=shape)
        log = server.log()
    print("\n" + report(f"{rate_mb} MB/s {shape}", result))
    assert result["sent_bytes"] >= 0.8 * rate_mb * MB * SECONDS, report("load", result)
    assert set(result["statuses"]) == {202}, report("statuses", result)
    assert result["stats"]["lost_running"] == 0, report("lost", result)
    assert result["peak"] <= BOUND, report("peak", result) + "\n" + log
    assert "Memory cleanup: Cleaned" in log  # the emergency lines reach the server's stderr


def test_json_results_under_pymalloc_stay_under_the_limit_and_say_why(
        tmp_path: Path, policy: Path) -> None:
    """With the default allocator, parsed-JSON results leave freed objects in pymalloc's
    arenas: a cleanup lowers RSS little and the emergency bound cannot be held by eviction
    alone (measured and documented: docs/monitor.md). The guard still keeps the worker under
    its limit (critical = 100% of it), loses no running job, and says why in the log."""
    with guard_server(tmp_path, "guard-json-pymalloc", policy) as server:
        result = drive(server.url, rate=25 * MB, sizes=(MB // 10, MB), shape="json")
        log = server.log()
    print("\n" + report("25 MB/s json, pymalloc", result))
    assert result["peak"] < LIMIT, report("peak", result) + "\n" + log
    assert result["stats"]["lost_running"] == 0, report("lost", result)
    assert set(result["statuses"]) == {202}, report("statuses", result)
    assert "Memory cleanup: Cleaned" in log


def test_the_bundled_default_policy_stays_under_critical(tmp_path: Path) -> None:
    default = ROOT / "policies" / "default.toml"
    with guard_server(tmp_path, "guard-default", default) as server:
        result = drive(server.url, rate=25 * MB, sizes=(3 * MB, 8 * MB), shape="text")
        log = server.log()
    print("\n" + report("default policy, 25 MB/s of 3-8 MB", result))
    critical = 600 * MB
    assert result["peak"] < critical, report("peak", result) + "\n" + log
    assert result["stats"]["lost_running"] == 0, report("lost", result)
    assert set(result["statuses"]) == {202}, report("statuses", result)
    lines = [line for line in log.splitlines()
             if re.search(r"(Memory|R14|quota|exceeded)", line)]  # the seed's runbook grep
    assert any("Memory level ok -> warning" in line or "Memory level warning -> emergency"
               in line for line in lines), log
    assert any("Memory cleanup: Cleaned" in line for line in lines), log
