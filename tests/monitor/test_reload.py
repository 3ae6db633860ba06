"""Hot reload (``[memory] watch = true``): the policy file edited, broken and fixed under a
running manager (real watcher thread, real files), and under a real gunicorn app."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from memguard import MemoryManager, handle, managed_store
from memguard.testing import FakeProbe

POLICY = """\
[memory]
limit = "512MB"
warning = "{warning}"
emergency = "480MB"
emergency_target = "380MB"
critical = "600MB"
check_interval = "1h"
watch = {watch}

[stores.diagram]
max_jobs = {max_jobs}
"""


def write(path: Path, text: str) -> None:
    """Replace the file the way an editor's "save" does: a new inode renamed over it."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # bounded
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds}s")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[MemoryManager, Path, Any]]:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY.format(warning="400MB", watch="true", max_jobs=50))
    manager = MemoryManager(probe=FakeProbe("100MB", limit="512MB"))
    manager.load_policy(path)

    @managed_store(name="diagram", manager=manager)
    class Diagrams(dict):  # type: ignore[type-arg]
        pass

    store = Diagrams()
    manager.start()
    yield manager, path, store
    manager.stop()


def test_edit_break_and_fix_under_a_running_manager(
        running: tuple[MemoryManager, Path, Any], caplog: pytest.LogCaptureFixture) -> None:
    manager, path, store = running
    assert manager.policy.memory.warning == 400 * 2**20

    write(path, POLICY.format(warning="420MB", watch="true", max_jobs=7))  # edit
    wait_for(lambda: manager.policy.memory.warning == 420 * 2**20)
    assert handle(store).policy.max_jobs == 7
    assert manager.get_memory_stats().to_dict()["thresholds"]["warning"] == 420 * 2**20

    with caplog.at_level(logging.ERROR, logger="memguard"):
        # break it: a bad value on line 3, and a store section that would be valid
        write(path, POLICY.format(warning="lots", watch="true", max_jobs=3))
        wait_for(lambda: any("policy reload failed" in r.getMessage() for r in caplog.records))
    (failure,) = [r.getMessage() for r in caplog.records if "reload failed" in r.getMessage()]
    assert f"{path}:3: memory.warning" in failure and 'got "lots"' in failure
    assert "keeping the previous policy" in failure
    time.sleep(1.5)  # three more looks at the broken file: nothing applied, nothing re-logged
    assert manager.policy.memory.warning == 420 * 2**20
    assert handle(store).policy.max_jobs == 7  # whole or not at all: the valid part neither
    assert len([r for r in caplog.records if "reload failed" in r.getMessage()]) == 1

    write(path, POLICY.format(warning="430MB", watch="true", max_jobs=9))  # fix
    wait_for(lambda: manager.policy.memory.warning == 430 * 2**20)
    assert handle(store).policy.max_jobs == 9


def test_saving_watch_false_stops_watching(running: tuple[MemoryManager, Path, Any]) -> None:
    from memguard.monitor.triggers import update_watcher

    manager, path, _ = running
    watcher = update_watcher(manager, True)
    assert watcher is not None and watcher.running
    write(path, POLICY.format(warning="410MB", watch="false", max_jobs=5))
    wait_for(lambda: manager.policy.memory.watch is False)
    wait_for(lambda: not watcher.running)
    write(path, POLICY.format(warning="440MB", watch="true", max_jobs=5))
    time.sleep(1.5)  # nobody watches any more
    assert manager.policy.memory.warning == 410 * 2**20


def test_a_deleted_file_keeps_the_policy_until_it_returns(
        running: tuple[MemoryManager, Path, Any], caplog: pytest.LogCaptureFixture) -> None:
    manager, path, _ = running
    with caplog.at_level(logging.ERROR, logger="memguard"):
        path.unlink()
        wait_for(lambda: any("is gone" in r.getMessage() for r in caplog.records))
    assert manager.policy.memory.warning == 400 * 2**20
    write(path, POLICY.format(warning="450MB", watch="true", max_jobs=50))
    wait_for(lambda: manager.policy.memory.warning == 450 * 2**20)


def test_watch_is_off_by_default_and_stops_with_the_manager(tmp_path: Path) -> None:
    from memguard.monitor.triggers import update_watcher

    path = tmp_path / "policy.toml"
    path.write_text(POLICY.format(warning="400MB", watch="false", max_jobs=50))
    manager = MemoryManager(probe=FakeProbe("100MB", limit="512MB"))
    manager.load_policy(path)
    manager.start()
    try:
        assert update_watcher(manager, manager.policy.memory.watch) is None
        write(path, POLICY.format(warning="400MB", watch="true", max_jobs=50))
        manager.load_policy(path)  # now the policy asks for it
        watcher = update_watcher(manager, True)
        assert watcher is not None and watcher.running
    finally:
        manager.stop()
    assert not watcher.running


@pytest.mark.slow
def test_hot_reload_under_gunicorn(tmp_path: Path) -> None:
    """Edit, break and fix the policy of a running 1-worker gunicorn app; /memory shows it."""
    import httpx
    from acceptance.test_servers import ROOT, free_port, gunicorn_argv, serve

    path = tmp_path / "policy.toml"
    path.write_text(POLICY.format(warning="400MB", watch="true", max_jobs=50))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMGUARD_", "GUNICORN"))}
    port = free_port()
    env.update(MEMGUARD_POLICY=str(path), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
               WEB_CONCURRENCY="1", PORT=str(port))
    argv = gunicorn_argv("-c", "examples/gunicorn.conf.py", "examples.flask_app:app")
    with serve("gunicorn-reload", argv, port, env, tmp_path / "reload.log") as server:
        def warning() -> int:
            return int(httpx.get(f"{server.url}/memory", timeout=10).json()
                       ["thresholds"]["warning"])

        assert warning() == 400 * 2**20
        write(path, POLICY.format(warning="420MB", watch="true", max_jobs=50))
        wait_for(lambda: warning() == 420 * 2**20)
        write(path, POLICY.format(warning="[1, 2]", watch="true", max_jobs=50))
        wait_for(lambda: "policy reload failed" in server.log())
        assert f"{path}:3: memory.warning" in server.log()
        assert warning() == 420 * 2**20
        write(path, POLICY.format(warning="430MB", watch="true", max_jobs=50))
        wait_for(lambda: warning() == 430 * 2**20)
