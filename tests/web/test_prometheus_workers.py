"""Finding the workers' shared metrics directory without PROMETHEUS_MULTIPROC_DIR: who counts
as a ``uvicorn --workers N`` worker, and which run directories count as stale. (The real
uvicorn run is tests/acceptance/test_uvicorn_workers_metrics.py.)"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from memguard.web.prometheus import (
    MULTIPROC_ENV,
    RUN_PREFIX,
    drop_dead_workers,
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


def test_workers_dropping_the_same_dead_worker_at_once_raise_nothing(tmp_path: Path) -> None:
    """Every uvicorn worker drops gone workers' gauges at each mirroring: two finding the same
    dead worker's files race to remove them, and the later one must not fail (it would log a
    traceback for a mirroring that did its work). Four threads, many rounds: a removal that
    raises on a file already gone fails about one round in three."""
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    errors: list[BaseException] = []
    for round_ in range(60):
        directory = tmp_path / f"run{round_}"
        directory.mkdir()
        for mode in ("liveall", "livesum"):
            (directory / f"gauge_{mode}_{exited.pid}.db").write_bytes(b"")
        (directory / f"gauge_liveall_{os.getpid()}.db").write_bytes(b"")  # alive: kept
        (directory / f"counter_{exited.pid}.db").write_bytes(b"")  # totals of the dead: kept
        start = threading.Barrier(4)

        def drop(directory: Path = directory, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                drop_dead_workers(str(directory))
            except BaseException as error:  # collected for the assertion below
                errors.append(error)

        threads = [threading.Thread(target=drop) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(path.name for path in directory.iterdir()) == sorted(
            [f"counter_{exited.pid}.db", f"gauge_liveall_{os.getpid()}.db"])
    assert not errors, errors[:3]
