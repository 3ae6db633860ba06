"""Stores across fork (issue 12, item 1): children forked while other threads hold store,
index and manager locks can still write, clean up and register stores.

The forking runs in a child interpreter, never in pytest's own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


FORK_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    from memguard import MemoryManager, Policy, handle, managed_store

    manager = MemoryManager(Policy())

    @managed_store(manager=manager, max_jobs=50)
    class Jobs(dict):
        pass

    store = Jobs()
    h = handle(store)
    stop = threading.Event()

    def inserter():
        i = 0
        while not stop.is_set():
            store[f"job{i % 500}"] = {"status": "done" if i % 3 else "running", "result": "x"}
            i += 1

    def cleaner():
        while not stop.is_set():
            h.cleanup()

    def holder():  # a user's `with handle.lock` around some work
        while not stop.is_set():
            with h.lock:
                time.sleep(0.001)

    def registrar():  # new stores register with the manager under its lock
        while not stop.is_set():
            Jobs()

    threads = [threading.Thread(target=t, daemon=True)
               for t in (inserter, inserter, cleaner, holder, registrar)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    children = []
    for n in range(20):
        time.sleep(0.005)
        if n % 5 == 4:  # also fork from inside a held store lock
            with h.lock:
                pid = os.fork()
        else:
            pid = os.fork()
        if pid == 0:
            signal.alarm(10)  # a hung child dies (SIGALRM) instead of hanging the test
            store[f"child{n}"] = {"status": "done", "result": "y"}
            written = f"child{n}" in store and f"child{n}" in h.index
            h.cleanup()
            h.stats()
            Jobs()["x"] = {"status": "done"}
            os._exit(0 if written else 2)
        children.append(pid)
    stop.set()
    results = {}
    deadline = time.monotonic() + 30
    pending = set(children)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                results[pid] = os.waitstatus_to_exitcode(status)
                pending.discard(pid)
        time.sleep(0.01)
    for pid in pending:  # overran: kill and reap
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        results[pid] = "hung"
    print(json.dumps(sorted(results.values(), key=str)))
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_children_forked_while_threads_hold_store_locks_can_write(tmp_path: Path) -> None:
    script = tmp_path / "fork_child.py"
    script.write_text(FORK_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(ROOT)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [0] * 20
