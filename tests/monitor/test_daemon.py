"""The one polling thread (`memguard.monitor.daemon.DaemonLoop`) and its three users: it survives
what a step raises, restarts when the loop itself dies, and the policy watcher and the cleanup
listener, which run on it, keep working through a failing step (real threads, real files).
`ForkSafeLock` is checked across a real fork in a fresh interpreter."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Union

import pytest
from waiting import wait_until

from memguard import MemoryManager, managed_store
from memguard.eviction.events import CleanupReport
from memguard.monitor.daemon import DaemonLoop
from memguard.monitor.triggers import CleanupListener, PolicyWatcher
from memguard.testing import FakeProbe

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("raised", [ValueError, KeyboardInterrupt, SystemExit])
def test_a_step_that_raises_is_logged_counted_and_the_loop_goes_on(
        raised: type[BaseException], caplog: pytest.LogCaptureFixture) -> None:
    steps: list[int] = []
    failures: list[int] = []

    def step() -> None:
        steps.append(1)
        if len(steps) <= 2:
            raise raised("boom")

    loop = DaemonLoop("memguard-test-loop", step=step, interval=lambda: 0.01,
                      on_failure=lambda: failures.append(1))
    with caplog.at_level(logging.ERROR, logger="memguard"):
        loop.start()
        try:
            assert wait_until(lambda: len(steps) >= 4)
            assert loop.running and loop.restarts == 0
        finally:
            assert loop.stop(5)
    assert len(failures) == 2
    assert caplog.text.count("a memguard-test-loop step failed; carrying on") == 2
    assert not loop.running


def test_a_loop_that_dies_restarts_and_says_so_in_its_own_words(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    steps: list[int] = []
    loop = DaemonLoop("memguard-test-loop", step=lambda: steps.append(1), interval=lambda: 0.01,
                      title="Test poller", consequence="nothing is polled")
    real_wait = loop.wait
    deaths: list[int] = []

    def dying_wait(stop: threading.Event) -> None:
        if not deaths:
            deaths.append(1)
            raise SystemExit("escaped every guard")
        real_wait(stop)

    monkeypatch.setattr(loop, "wait", dying_wait)
    with caplog.at_level(logging.ERROR, logger="memguard"):
        loop.start()
        try:
            assert wait_until(lambda: loop.restarts == 1 and len(steps) >= 3 and loop.running)
        finally:
            assert loop.stop(5)
    assert "Test poller thread died; restarting it (1)" in caplog.text


def test_ask_stop_from_the_step_ends_the_loop() -> None:
    steps: list[int] = []
    loop: DaemonLoop

    def step() -> None:
        steps.append(1)
        assert loop.stop(5) is False  # from its own thread: only asks

    loop = DaemonLoop("memguard-test-loop", step=step, interval=lambda: 0.01)
    loop.start()
    assert wait_until(lambda: not loop.running)
    assert steps == [1] and not loop.wanted
    loop.start()  # and it can be started again
    assert wait_until(lambda: len(steps) == 2 and not loop.running)


# -- the policy watcher ----------------------------------------------------------------------

POLICY = '[memory]\nlimit = "512MB"\nwarning = "{warning}"\nwatch = true\n'


def save(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class FlakyManager(MemoryManager):
    """A real manager whose next `load_policy` raises something other than a PolicyError,
    as a broken hook of the application's could."""

    fail_next = False

    def load_policy(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("an app hook broke the reload")
        return super().load_policy(*args, **kwargs)


def test_the_watcher_outlives_a_failing_reload_and_applies_the_next_edit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY.format(warning="400MB"))
    manager = FlakyManager(probe=FakeProbe("100MB", limit="512MB"))
    manager.load_policy(path)
    watcher = PolicyWatcher(manager, path)
    watcher.start()
    try:
        manager.fail_next = True
        with caplog.at_level(logging.ERROR, logger="memguard"):
            save(path, POLICY.format(warning="410MB"))
            assert wait_until(lambda: "a memguard-policy-watch step failed" in caplog.text)
        assert "an app hook broke the reload" in caplog.text
        assert watcher.running and manager.policy.memory.warning == 400 * 2**20
        save(path, POLICY.format(warning="420MB"))
        assert wait_until(lambda: manager.policy.memory.warning == 420 * 2**20)
        assert watcher.reloads == 1
    finally:
        watcher.stop()
    assert not watcher.running


# -- the cleanup listener --------------------------------------------------------------------

class InterruptedManager(MemoryManager):
    """A real manager whose first emergency cleanup is interrupted (a BaseException, which the
    listener's own handler does not catch: only the loop's does)."""

    interrupted = False

    def emergency_cleanup(self) -> CleanupReport:
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return super().emergency_cleanup()


def test_the_listener_outlives_an_interrupted_cleanup_and_answers_the_next(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manager = InterruptedManager(probe=FakeProbe("100MB", limit="512MB"))
    manager.load_policy('[memory]\nlimit = "512MB"\nemergency_target = "1MB"\n')

    @managed_store(name="concept", manager=manager)
    class Concepts(dict):  # type: ignore[type-arg]
        pass

    store = Concepts(done={"status": "done", "result": "x" * 1000})
    directory = tmp_path / "run"
    listener = CleanupListener(manager, directory)
    assert listener.start()
    pid = os.getpid()
    try:
        with caplog.at_level(logging.ERROR, logger="memguard"):
            (directory / f"{pid}.first.request").write_text("{}")
            assert wait_until(lambda: "a memguard-cleanup-requests step failed" in caplog.text)
        assert listener.running and "done" in store
        (directory / f"{pid}.second.request").write_text("{}")
        report = directory / f"{pid}.second.report"
        assert wait_until(report.exists)
        answer = json.loads(report.read_text())
        assert answer["report"]["by_store"]["concept"]["emergency"] == 1
        assert "done" not in store
    finally:
        listener.stop()


# -- across fork (each in a fresh interpreter: pytest's own process may run other threads) ---

WATCH_AFTER_FORK = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from memguard import MemoryManager
    from memguard.monitor.triggers import update_watcher
    path = Path(sys.argv[2])
    manager = MemoryManager()
    manager.load_policy(path)
    watcher = update_watcher(manager, True)
    assert watcher is not None and watcher.running
    pid = os.fork()
    if pid == 0:
        deadline = time.monotonic() + 10
        while not watcher.running and time.monotonic() < deadline:
            time.sleep(0.01)
        ok = watcher.running
        if ok:  # and it works: an edit made in the child's time is applied there
            tmp = path.with_suffix(".tmp")
            tmp.write_text(path.read_text().replace("400MB", "430MB"))
            os.replace(tmp, path)
            while manager.policy.memory.warning != 430 * 2**20 and time.monotonic() < deadline:
                time.sleep(0.02)
            ok = manager.policy.memory.warning == 430 * 2**20
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    watcher.stop()
    print("child", os.waitstatus_to_exitcode(status))
""")

LOCK_ACROSS_FORK = textwrap.dedent("""
    import os, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    from memguard.monitor.daemon import ForkSafeLock
    guard = ForkSafeLock()
    holding, done = threading.Event(), threading.Event()

    def holder():
        with guard.lock:
            holding.set()
            done.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(10)
    guard.hold_for_fork(0.05)  # the holder does not let go: fork goes ahead regardless
    pid = os.fork()
    if pid == 0:
        guard.renew_after_fork()
        os._exit(0 if guard.lock.acquire(timeout=2) else 1)
    guard.release_after_fork()
    _, status = os.waitpid(pid, 0)
    done.set()
    thread.join(10)
    guard.hold_for_fork(2)  # free now: taken, and let go after the fork
    pid = os.fork()
    if pid == 0:
        guard.renew_after_fork()
        os._exit(0)
    guard.release_after_fork()
    os.waitpid(pid, 0)
    taken = []  # by another thread (the main one could re-enter it anyway): really free?
    probe = threading.Thread(target=lambda: taken.append(guard.lock.acquire(timeout=2)))
    probe.start()
    probe.join(10)
    print("child", os.waitstatus_to_exitcode(status), "parent-free", taken == [True])
""")


def run_child(script: str, *args: Union[str, Path]) -> str:
    result = subprocess.run([sys.executable, "-c", script, str(ROOT), *map(str, args)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_watcher_started_before_fork_watches_in_the_child(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY.format(warning="400MB"))
    assert run_child(WATCH_AFTER_FORK, path) == "child 0"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_safe_lock_is_free_in_the_child_whoever_held_it() -> None:
    assert run_child(LOCK_ACROSS_FORK) == "child 0 parent-free True"
