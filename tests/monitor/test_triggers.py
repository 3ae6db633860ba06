"""memguard.monitor.triggers in-process: the run directory's safety checks, the beacon's lifetime,
and a
request answered by a real listener thread (the CLI side is in test_cli_commands and the
server side in tests/acceptance/test_cleanup_trigger.py)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from memguard import MemoryManager, managed_store
from memguard.errors import RunDirError
from memguard.monitor.triggers import CleanupListener, beacon_path, ensure_run_dir
from memguard.testing import FakeProbe


def test_an_unsafe_run_directory_is_refused(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(RunDirError, match="writable by other users"):
        ensure_run_dir(shared)
    listener = CleanupListener(MemoryManager(), shared)
    with caplog.at_level(logging.WARNING, logger="memguard"):
        assert listener.start() is False
    assert "not listening for cleanup requests" in caplog.text
    assert list(shared.iterdir()) == []


def test_a_file_where_the_directory_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("")
    with pytest.raises(RunDirError, match=r"cannot use|not a directory"):
        ensure_run_dir(tmp_path / "run")


def test_a_request_is_answered_once_with_the_report(tmp_path: Path) -> None:
    manager = MemoryManager(probe=FakeProbe("100MB", limit="512MB"))
    manager.load_policy('[memory]\nlimit = "512MB"\nemergency_target = "1MB"\n'
                        'check_interval = "1h"\n')

    @managed_store(name="concept", manager=manager)
    class Concepts(dict):  # type: ignore[type-arg]
        pass

    store = Concepts(done={"status": "done", "result": "x" * 1000})
    listener = CleanupListener(manager, tmp_path / "run")
    assert listener.start()
    try:
        directory = tmp_path / "run"
        assert (directory.stat().st_mode & 0o777) == 0o700
        beacon = json.loads(beacon_path(directory, os.getpid()).read_text())
        assert beacon["pid"] == os.getpid() and beacon["started"] > 0
        (directory / f"{os.getpid()}.abc.request").write_text("{}")
        report_path = directory / f"{os.getpid()}.abc.report"
        deadline = time.monotonic() + 10
        while not report_path.exists() and time.monotonic() < deadline:  # bounded
            time.sleep(0.05)
        answer = json.loads(report_path.read_text())
        assert answer["report"]["by_store"]["concept"]["emergency"] == 1
        assert "done" not in store
        assert not (directory / f"{os.getpid()}.abc.request").exists()  # taken once
        (directory / "999999.other.request").write_text("{}")  # another pid's: not ours
        time.sleep(0.6)
        assert (directory / "999999.other.request").exists()
    finally:
        listener.stop()
    assert not beacon_path(tmp_path / "run", os.getpid()).exists()
