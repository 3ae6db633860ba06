"""The monitor thread across fork and at exit, each case in a fresh interpreter.

Forking is done in a child interpreter, never in pytest's own process (which may run other
threads). Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from memguard import MemoryManager
from memguard.monitor.thread import THREAD_NAME
from memguard.testing import FakeClock, FakeProbe

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

FORK_CHILD = textwrap.dedent(
    """
    import json, os, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    START = sys.argv[2] == "start"
    from memguard import MemoryManager
    from memguard.memory import ProcessProbe

    def wait_until(predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    manager = MemoryManager(probe=ProcessProbe(swap=False))
    monitor = manager.setup_memory_monitoring(0.05) if START else manager._monitor()
    if START:
        assert wait_until(lambda: monitor.ticks >= 2)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the forked child
        os.close(read)
        out = {"pid": os.getpid()}
        try:
            names = lambda: [t.name for t in threading.enumerate()]
            if START:  # the at-fork hook restarts it: wait (bounded) for it to appear
                wait_until(lambda: "memguard-monitor" in names())
            else:  # give a wrongly restarted thread the time to show up
                time.sleep(0.2)
            out["threads"] = names()
            out["running"] = monitor.running
            if START:
                ticks = monitor.ticks
                out["ticked"] = wait_until(lambda: monitor.ticks >= ticks + 3)
                before = monitor.last_sample.rss
                ballast = bytearray(80 * 2**20)  # touch 80 MB: only this process grows
                for i in range(0, len(ballast), 4096):
                    ballast[i] = 1
                out["sees_own_growth"] = wait_until(
                    lambda: monitor.last_sample.rss >= before + 60 * 2**20)
                out["rss_before"], out["rss_after"] = before, monitor.last_sample.rss
                out["stopped"] = monitor.stop(timeout=5)
                out["threads_after_stop"] = [t.name for t in threading.enumerate()]
        except BaseException as error:
            out["error"] = repr(error)
        os.write(write, json.dumps(out).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while True:
        chunk = os.read(read, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    child = json.loads(b"".join(chunks))
    ticks = monitor.ticks
    parent_ticks = wait_until(lambda: monitor.ticks >= ticks + 2) if START else None
    parent_threads = [t.name for t in threading.enumerate()]
    manager.stop()
    print(json.dumps({"child": child, "status": status, "parent_ticks": parent_ticks,
                      "parent_threads": parent_threads}))
    """
)


def run(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_forked_child_keeps_monitoring_itself() -> None:
    done = run(FORK_CHILD, "start")
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout)
    child = result["child"]
    assert "error" not in child, child
    assert result["status"] == 0
    assert child["threads"].count(THREAD_NAME) == 1, child
    assert child["running"] and child["ticked"], child
    assert child["sees_own_growth"], child  # it samples the child, not the parent
    assert child["stopped"] and THREAD_NAME not in child["threads_after_stop"], child
    # the parent's monitor carried on across the fork
    assert result["parent_ticks"] is True
    assert result["parent_threads"].count(THREAD_NAME) == 1


def test_a_monitor_that_was_not_running_stays_stopped_in_the_child() -> None:
    done = run(FORK_CHILD, "idle")
    assert done.returncode == 0, done.stderr[-4000:]
    child = json.loads(done.stdout)["child"]
    assert "error" not in child, child
    assert THREAD_NAME not in child["threads"] and not child["running"]


def test_start_then_stop_leaves_no_thread() -> None:
    manager = MemoryManager(clock=FakeClock(), probe=FakeProbe("100MB"))
    monitor = manager.setup_memory_monitoring(0.01)
    deadline = time.monotonic() + 5
    while monitor.ticks < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert monitor.ticks >= 3
    manager.stop()
    assert THREAD_NAME not in [t.name for t in threading.enumerate()]
    assert not monitor.running


EXIT_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    import memguard
    from memguard.memory import ProcessProbe

    probe = ProcessProbe()
    if sys.argv[2] == "busy":
        def slow_probe():  # the main thread exits while the monitor is mid-tick
            time.sleep(0.5)
            return probe()
        memguard.manager.probe = slow_probe
        monitor = memguard.manager.setup_memory_monitoring(0.01)
        time.sleep(0.1)
    else:
        monitor = memguard.manager.setup_memory_monitoring("1h")
        deadline = time.monotonic() + 5
        while monitor.ticks < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
    assert monitor.running
    print("started", flush=True)
    """
)


@pytest.mark.parametrize("mode", ["idle", "busy"])
def test_a_process_with_a_running_monitor_exits_promptly(mode: str) -> None:
    began = time.monotonic()
    done = run(EXIT_CHILD, mode, timeout=20)
    elapsed = time.monotonic() - began
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip() == "started"
    assert "Traceback" not in done.stderr, done.stderr
    assert elapsed < 5, f"exit took {elapsed:.2f}s"
