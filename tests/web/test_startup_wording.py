"""What a user reads, under gunicorn with its default logging and from the `memguard` CLI run
as a command: one start-up line per worker (policy, limit, scope, stores), no alarming line
where SIGUSR1 stays with gunicorn, one line when the policy overrides a decorator argument,
a freed-bytes counter that counts the count bound's evictions, `memguard health` in one format
and one scope label whichever endpoint it reads, `policy show` with every interval in one
unit style."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

POLICY = textwrap.dedent('''
    [memory]
    scope = "process"
    limit = "4GB"
    signal_cleanup = true

    [stores.iac]
    max_jobs = 5
''')

APP = textwrap.dedent('''
    from flask import Flask
    import memguard
    from memguard import managed_store


    @managed_store(name="iac", mapping="jobs", max_jobs=3)
    class IacJobs:
        def __init__(self):
            self.jobs = {}


    iac = IacJobs()
    for i in range(20):  # the count bound (5, the policy's) evicts 15 at insert
        iac.jobs[f"j{i}"] = {"status": "completed", "result": "x" * 10_000}
    app = Flask(__name__)
    memguard.integrations.flask.init_app(app, start=False)  # the post_fork hook starts it
''')

OURS = re.compile(r" memguard\[(\d+)\] [A-Z]+: (.*)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memguard_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memguard.tools.cli", *args],
                          capture_output=True, text=True, timeout=60)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


def test_what_gunicorn_workers_say_and_serve(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEMGUARD_", "GUNICORN", "PROMETHEUS_"))}
    env.update(MEMGUARD_POLICY=str(policy), PYTHONPATH=str(tmp_path), PYTHONUNBUFFERED="1")
    log = tmp_path / "stderr.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:memguard.integrations.gunicorn",
             "--bind", f"127.0.0.1:{port}", "--workers", "2", "app:app"],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # bounded: until both workers said they started, or the deadline
            assert process.poll() is None, log.read_text()
            started = re.findall(r"Memory guard started in pid (\d+)", log.read_text())
            if len(set(started)) >= 2:
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        metrics = get(f"{base}/metrics")
        health = {path: memguard_cli("health", "--url", f"{base}{path}")
                  for path in ("/memory", "/health")}
        time.sleep(1)  # any late line of the workers' start
        text = log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)

    ours = [(int(m.group(1)), m.group(2)) for line in text.splitlines()
            if (m := OURS.search(line))]
    workers = {pid for pid, line in ours if line.startswith("Memory guard started")}
    assert len(workers) == 2, text
    for pid in workers:
        said = [line for who, line in ours if who == pid]
        starts = [line for line in said if line.startswith("Memory guard started")]
        assert len(starts) == 1, said
        assert starts[0] == (f"Memory guard started in pid {pid}: policy {policy}, limit 4.0GB "
                             "(the policy's), scope process; warning 3.0GB, emergency 3.6GB, "
                             "critical 4.0GB; stores iac"), starts[0]
        overrides = [line for line in said if line.startswith("Memory policy:")]
        assert overrides == [f"Memory policy: store iac max_jobs is 5 from {policy}:8, over "
                             "the decorator's 3"], said
    # SIGUSR1 is gunicorn's in its workers: left to it without a warning or an object repr.
    assert "SIGUSR1" not in text and "<bound method" not in text, text
    assert not [line for line in text.splitlines() if "memguard" in line and "WARNING" in line]

    # Every eviction's bytes are counted: here the count bound's alone, no cleanup ran.
    freed = [float(value) for value in re.findall(
        r"^memguard_freed_estimate_bytes_total(?:\{[^}]*\})? (\S+)$", metrics, re.MULTILINE)]
    assert freed and sum(freed) >= 15 * 10_000, metrics
    cleanups = re.findall(r"^memguard_cleanups_total\{.*\} (\S+)$", metrics, re.MULTILINE)
    assert sum(float(value) for value in cleanups) == 0, metrics

    # One reading, one format, one scope label, from either endpoint.
    for path, done in health.items():
        assert done.returncode == 0, done.stderr
        first, *rest = done.stdout.splitlines()
        assert re.fullmatch(rf"ok: {base}{path} \(pid \d+\) uses \d+\.\dMB of 4\.0GB "
                            r"\(\d+%\) \[process\]", first), done.stdout
        assert not [line for line in rest if "usage" in line or "(process)" in line
                    or "4096" in line], done.stdout


def test_policy_show_writes_every_interval_as_a_duration() -> None:
    done = memguard_cli("policy", "show")
    assert done.returncode == 0, done.stderr
    shown = dict(line.split()[:2] for line in done.stdout.splitlines()
                 if re.match(r"\s+\w+_interval\s|\s+cooldown\s", line))
    assert set(shown) == {"check_interval", "sample_interval", "gc_interval",
                          "summary_interval", "cooldown"}, done.stdout
    assert all(re.fullmatch(r"(\d+(\.\d+)?(ms|s|m|h|d))+", value) for value in
               shown.values()), shown
    assert shown["sample_interval"] == "250ms"
