"""SIGUSR1 when the monitor is reloaded or stopped from a worker thread (issue 24, item 2).

Only the main thread may install or restore a signal handler. A handler memguard no longer
wants is restored as soon as the main thread runs Python, whichever thread asked; a real
SIGUSR1 sent afterwards gets the default action (the process ends), never a cleanup and never
nothing. A handler wanted from a worker thread is installed by the main thread's next start
or reload. Each case runs in a fresh interpreter that the test sends a real signal to.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1"),
    pytest.mark.skipif(sys.version_info < (3, 10),
                       reason="the main thread is asked through interrupt_main(signum), 3.10+"),
]

PRELUDE = textwrap.dedent(
    """
    import signal, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    from memguard import MemoryManager, MemoryPolicy, Policy

    ON = Policy(memory=MemoryPolicy(signal_cleanup=True))
    OFF = Policy(memory=MemoryPolicy(signal_cleanup=False))

    def in_worker(action):
        worker = threading.Thread(target=action)
        worker.start()
        worker.join()

    def main_runs_python_until(predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            sum(range(1000))  # bytecode: the main thread runs what was queued for it
        return predicate()

    def default_back():
        return signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL

    manager = MemoryManager(ON)
    manager.start()
    ours = manager.monitor._on_signal
    assert signal.getsignal(signal.SIGUSR1) == ours
    """
)

WAIT_FOR_SIGNAL = textwrap.dedent(
    """
    print("ready", flush=True)
    time.sleep(10)  # the test sends SIGUSR1 now
    print("survived", manager.monitor.totals, flush=True)
    """
)


def run_and_signal(body: str, tail: str = WAIT_FOR_SIGNAL) -> tuple[int, str, str]:
    """Run PRELUDE + `body` + `tail`; send SIGUSR1 once it prints "ready"."""
    child = subprocess.Popen([sys.executable, "-c", PRELUDE + body + tail, str(ROOT)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None
    fd = child.stdout.fileno()
    out = b""
    deadline = time.monotonic() + 30
    try:
        while b"ready\n" not in out and time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], 0.1)
            if readable:
                chunk = os.read(fd, 65536)  # unbuffered: no line waits in a Python buffer
                if not chunk:
                    break
                out += chunk
        if b"ready\n" in out:
            os.kill(child.pid, signal.SIGUSR1)  # a real signal, from outside
        rest, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, (out + rest).decode(), err.decode()


def test_signal_cleanup_turned_off_and_monitor_stopped_from_a_worker_thread() -> None:
    code, out, err = run_and_signal(
        """
in_worker(lambda: (manager.apply_policy(OFF), manager.stop()))
print("restored", main_runs_python_until(default_back), flush=True)
""")
    assert "restored True" in out, (out, err)
    assert code == -signal.SIGUSR1, (code, out, err)  # the default action: the process ends
    assert "survived" not in out


def test_signal_cleanup_turned_off_by_a_reload_in_a_worker_thread() -> None:
    code, out, err = run_and_signal(
        """
in_worker(lambda: manager.apply_policy(OFF))  # the monitor keeps running
print("restored", main_runs_python_until(default_back), flush=True)
print("running", manager.monitor.running, flush=True)
""")
    assert "restored True" in out and "running True" in out, (out, err)
    assert code == -signal.SIGUSR1, (code, out, err)


def test_a_monitor_stopped_from_a_worker_thread_while_main_is_blocked() -> None:
    # the main thread sits in a blocking wait: the handler goes once it runs Python again,
    # and a signal arriving before then still gets the default action
    code, out, err = run_and_signal(
        """
stopper = threading.Thread(target=manager.stop)
stopper.start()
stopper.join()  # blocked in C while the worker stops the monitor
print("restored", main_runs_python_until(default_back), flush=True)
""")
    assert "restored True" in out, (out, err)
    assert code == -signal.SIGUSR1, (code, out, err)


def test_signal_cleanup_turned_back_on_from_a_worker_waits_for_the_main_thread() -> None:
    code, out, err = run_and_signal(
        """
in_worker(lambda: manager.apply_policy(OFF))
main_runs_python_until(default_back)
in_worker(lambda: manager.apply_policy(ON))  # wanted again: a worker cannot install it
print("installed_by_worker", signal.getsignal(signal.SIGUSR1) == ours, flush=True)
manager.apply_policy(ON)  # the main thread's next reload does
print("installed_by_main", signal.getsignal(signal.SIGUSR1) == ours, flush=True)
""", WAIT_FOR_SIGNAL.replace("time.sleep(10)", textwrap.dedent("""\
    main_runs_python_until(lambda: sum(manager.monitor.totals["cleanups"].values()) > 0, 10)""")))
    assert "installed_by_worker False" in out and "installed_by_main True" in out, (out, err)
    assert code == 0, (code, out, err)  # the signal asked for a cleanup, and got one
    assert "survived {'cleanups': {'emergency': 1}" in out, out
    assert "requested by SIGUSR1" in err, err


@pytest.mark.slow  # ~10 s: WAIT_FOR_SIGNAL's time.sleep(10) runs to its end here
def test_a_stopped_monitors_handler_is_taken_over_by_a_new_monitor() -> None:
    code, out, err = run_and_signal(
        """
import _thread
in_worker(manager.stop)  # removal queued for the main thread ...
second = MemoryManager(ON)
second.start()  # ... which starts another monitor first
print("second", signal.getsignal(signal.SIGUSR1) == second.monitor._on_signal, flush=True)
main_runs_python_until(lambda: False, 0.2)
print("kept", signal.getsignal(signal.SIGUSR1) == second.monitor._on_signal, flush=True)
manager = second
""")
    assert "second True" in out and "kept True" in out, (out, err)
    assert code == 0, (code, out, err)
