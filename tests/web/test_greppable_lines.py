"""The lines an operator greps for, under gunicorn with its default logging (issue 22 item 5,
DESIGN section 4): no logging set up by the app, so memguard's own lines must reach stderr.
The seed's runbook greps ``grep -E "(Memory|R14|quota|exceeded)"`` and
``grep "Cleaned.*jobs"``; ``log_samples = true`` prints Heroku-style lines (megabytes with two
decimals, at most one every 20 s per worker)."""

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

import pytest

pytestmark = pytest.mark.slow

RUNBOOK = re.compile(r"(Memory|R14|quota|exceeded)")
SAMPLE = re.compile(r"source=\S+\.pid(\d+) sample#memguard\.usage=\d+\.\d\dMB "
                    r"sample#memguard\.rss=\d+\.\d\dMB .*sample#memguard\.level=[0-3]$")

POLICY = textwrap.dedent('''
    [memory]
    scope = "process"
    limit = "4GB"
    warning = "1MB"
    warning_heap = "1KB"
    emergency = "3GB"
    emergency_target = "2GB"
    critical = "3.5GB"
    check_interval = "1s"
    log_samples = true

    [stores.iac]
    max_age = "1s"
''')

APP = textwrap.dedent('''
    from flask import Flask
    import memguard
    from memguard import managed_store


    @managed_store(name="iac", mapping="jobs")
    class IacJobs:
        def __init__(self):
            self.jobs = {}


    iac = IacJobs()
    for i in range(7):
        iac.jobs[f"j{i}"] = {"status": "completed", "result": "x" * 10_000}
    app = Flask(__name__)
    memguard.integrations.flask.init_app(app, start=False)  # the post_fork hook starts it
''')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_operator_lines_reach_gunicorns_stderr_and_match_the_runbook(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "policy.toml").write_text(POLICY)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMGUARD_", "GUNICORN"))}
    env.update(MEMGUARD_POLICY=str(tmp_path / "policy.toml"), PYTHONPATH=str(tmp_path),
               PYTHONUNBUFFERED="1")
    log = tmp_path / "stderr.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:memguard.integrations.gunicorn",
             "--bind", f"127.0.0.1:{port}", "--workers", "2", "app:app"],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while True:  # bounded: until both workers cleaned and sampled, or the deadline
            assert process.poll() is None, log.read_text()
            text = log.read_text()
            cleaned = re.findall(r"Memory cleanup: Cleaned 7 jobs from iac \(age=7\)", text)
            samples = [line for line in text.splitlines() if SAMPLE.search(line)]
            if len(cleaned) >= 2 and len({SAMPLE.search(s).group(1) for s in samples}) >= 2:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            assert answer.status == 200  # serving throughout
        time.sleep(3)  # several more ticks (every 250 ms to 1 s): still one sample line each
        text = log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)

    lines = text.splitlines()
    ours = [line for line in lines if re.search(r" memguard\[\d+\] [A-Z]+: ", line)]
    samples = [line for line in ours if SAMPLE.search(line)]
    operator = [line for line in ours if line not in samples]
    # The seed's greps find what they look for ...
    assert [line for line in lines if re.search("Cleaned.*jobs", line)], text
    assert any("Memory level ok -> warning" in line for line in operator), text
    assert any("Memory heap warning: heap " in line for line in operator), text
    # ... and every operator line memguard printed carries a word of the runbook pattern.
    assert operator and all(RUNBOOK.search(line) for line in operator), operator
    # Samples: one per worker in these few seconds (Heroku's period is 20 s), not one a tick.
    pids = [SAMPLE.search(line).group(1) for line in samples]
    assert len(pids) == len(set(pids)) == 2, samples
