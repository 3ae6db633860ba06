"""Finding the workers' shared metrics directory without PROMETHEUS_MULTIPROC_DIR: who counts
as a ``uvicorn --workers N`` worker, and which run directories count as stale. (The real
uvicorn run is tests/acceptance/test_uvicorn_workers_metrics.py.)"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from memguard.web.prometheus import (
    MULTIPROC_ENV,
    RUN_PREFIX,
    remove_stale_directories,
    run_directory,
    serve_every_worker,
    uvicorn_supervisor,
)


def _report_supervisor(queue: multiprocessing.Queue[object]) -> None:
    queue.put(uvicorn_supervisor())


def test_a_plain_process_and_a_spawned_child_are_not_uvicorn_workers() -> None:
    assert uvicorn_supervisor() is None
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_report_supervisor, args=(queue,))
    child.start()
    assert queue.get(timeout=60) is None  # spawned, but not by uvicorn's supervisor
    child.join(60)


def test_outside_uvicorn_the_environment_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    assert serve_every_worker(lambda: None) is None
    assert MULTIPROC_ENV not in os.environ


def test_stale_run_directories_are_those_whose_owner_is_gone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    gone = tmp_path / f"{RUN_PREFIX}{exited.pid}-1"
    reused_pid = tmp_path / f"{RUN_PREFIX}{os.getpid()}-1"  # this pid, another start time
    live = Path(run_directory(os.getpid()))
    other = tmp_path / f"{RUN_PREFIX}notes"
    plain_file = tmp_path / f"{RUN_PREFIX}{exited.pid}-2"
    for directory in (gone, reused_pid, live, other):
        directory.mkdir()
    (gone / "counter_123.db").write_bytes(b"x")
    plain_file.write_text("not a directory")
    assert live.parent == tmp_path
    assert sorted(remove_stale_directories()) == sorted([str(gone), str(reused_pid)])
    assert live.is_dir() and other.is_dir() and plain_file.is_file()
    assert not gone.exists() and not reused_pid.exists()
