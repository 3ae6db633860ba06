"""cgroup v2 PSI triggers on ``memory.pressure`` wake the monitor (DESIGN section 4, "Bursts"),
and a kernel that refuses the trigger leaves one debug line and no thread.

The probe reads a cgroup v2 directory made here (``memory.current``, ``memory.max``), whose
``memory.pressure`` is a symlink to a real pressure file of this kernel (the cgroup2 mount's,
else ``/proc/pressure/memory``): the trigger is written to, refused by and fired by the real
kernel. Machines differ in what they accept (kernels from 6.5 accept only two-second windows
from processes without ``CAP_SYS_RESOURCE``; some refuse every trigger), so each test that
needs an accepted trigger tries it first and skips, saying what the kernel answered.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest
from waiting import wait_until

from memguard import MemoryManager, MemoryPolicy, Policy
from memguard.memory.probes import CgroupProbe
from memguard.monitor.kernel import PSI_TRIGGER, THREAD_NAME, KernelWake
from memguard.policy.thresholds import Thresholds

MB = 2**20
THRESHOLDS = Thresholds(warning=600 * MB, emergency=800 * MB, emergency_target=700 * MB,
                        critical=900 * MB, limit=1000 * MB)
#: Refused by every kernel with PSI: the stall asked for is longer than the window.
IMPOSSIBLE = "some 3000000 2000000"
#: A trigger a small stall fires: 1 ms of stall in a two-second window.
SENSITIVE = "some 1000 2000000"


def cgroup2_pressure() -> Optional[Path]:
    """The cgroup2 mount's memory.pressure (this machine's whole-system pressure)."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            candidate = Path(fields[1]) / "memory.pressure"
            if candidate.exists():
                return candidate
    return None


def pressure_files() -> list[Path]:
    found = [cgroup2_pressure(), Path("/proc/pressure/memory")]
    return [path for path in found if path is not None and path.exists()]


def kernel_answer(path: Path, trigger: str) -> Optional[str]:
    """None when the kernel accepts `trigger` on `path`, else its error."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError as error:
        return str(error)
    try:
        os.write(fd, trigger.encode() + b"\0")
        return None
    except OSError as error:
        return str(error)
    finally:
        os.close(fd)


def accepting(trigger: str) -> Path:
    """A pressure file the kernel accepts `trigger` on; skips saying what it answered."""
    answers = {}
    for path in pressure_files():
        answer = kernel_answer(path, trigger)
        if answer is None:
            return path
        answers[str(path)] = answer
    pytest.skip(f"this kernel refuses the PSI trigger {trigger!r}: {answers or 'no PSI files'}")


def v2_probe(tmp_path: Path, pressure: Path) -> CgroupProbe:
    """A CgroupProbe of a cgroup v2 directory whose memory.pressure is the real `pressure`."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("memory\n")
    (root / "memory.current").write_text(f"{100 * MB}\n")
    (root / "memory.max").write_text(f"{1000 * MB}\n")
    (root / "memory.pressure").symlink_to(pressure)
    (tmp_path / "self-cgroup").write_text("0::/\n")
    probe = CgroupProbe(root, proc_cgroup=tmp_path / "self-cgroup", heap=False)
    assert probe.version == 2
    return probe


def kernel_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == THREAD_NAME]


@pytest.fixture
def wakes() -> Iterator[list[float]]:
    yield []


def test_a_refused_trigger_leaves_one_debug_line_and_no_thread(
        tmp_path: Path, wakes: list[float], caplog: pytest.LogCaptureFixture) -> None:
    files = pressure_files()
    if not files:
        pytest.skip("no memory.pressure or /proc/pressure/memory: a kernel without PSI")
    probe = v2_probe(tmp_path, files[0])
    kernel = KernelWake(lambda: wakes.append(time.monotonic()), psi_trigger=IMPOSSIBLE)
    before = kernel_threads()
    with caplog.at_level(logging.DEBUG, logger="memguard"):
        kernel.ensure(probe, THRESHOLDS)
        kernel.ensure(probe, THRESHOLDS)  # the next tick: no second try, no second line
    lines = [record.getMessage() for record in caplog.records if "PSI trigger" in record.message]
    assert len(lines) == 1 and "Invalid argument" in lines[0], lines
    assert all(record.levelno == logging.DEBUG for record in caplog.records)
    assert not kernel.armed and kernel_threads() == before
    kernel.close()


def test_the_default_trigger_where_this_kernel_refuses_it(
        tmp_path: Path, wakes: list[float], caplog: pytest.LogCaptureFixture) -> None:
    refused = [(path, answer) for path in pressure_files()
               if (answer := kernel_answer(path, PSI_TRIGGER)) is not None]
    if not refused:
        pytest.skip(f"this kernel accepts {PSI_TRIGGER!r} on every pressure file here")
    path, answer = refused[0]
    probe = v2_probe(tmp_path, path)
    kernel = KernelWake(lambda: wakes.append(time.monotonic()))
    with caplog.at_level(logging.DEBUG, logger="memguard"):
        kernel.ensure(probe, THRESHOLDS)
    assert not kernel.armed and not kernel_threads()
    assert any(answer in record.getMessage() for record in caplog.records), answer


def test_the_monitor_arms_the_default_trigger_on_a_cgroup_v2_probe(tmp_path: Path) -> None:
    probe = v2_probe(tmp_path, accepting(PSI_TRIGGER))
    manager = MemoryManager(Policy(memory=MemoryPolicy(
        scope="cgroup", limit="1000MB", warning="600MB", emergency="800MB",
        emergency_target="700MB", critical="900MB", sample_interval="10s")), probe=probe)
    try:
        manager.start()
        monitor = manager.monitor
        assert monitor is not None
        assert wait_until(lambda: monitor.ticks >= 1, timeout=5)
        kernel = monitor._ticker.kernel
        assert kernel is not None and wait_until(lambda: kernel.armed, timeout=2)
        assert kernel.psi_trigger == PSI_TRIGGER and len(kernel_threads()) == 1
    finally:
        manager.stop()
    assert not kernel_threads()


def writable_v1_memory_cgroup() -> Optional[Path]:
    """This process's cgroup v1 memory directory, when it may make a child there."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            directory = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            if directory.is_dir() and os.access(directory, os.W_OK):
                return directory
    return None


def stall_once(cgroup: Path) -> None:
    """A child in `cgroup` (32 MiB) allocating past it: the kernel reclaims in vain (a memory
    stall) and then kills it. Only the child and its tiny cgroup are touched."""
    script = (f"import os; open({str(cgroup / 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
              "blob = bytearray(64 * 2**20)\n")
    subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)


def test_a_memory_stall_fires_the_trigger_and_wakes(tmp_path: Path, wakes: list[float]) -> None:
    pressure = accepting(SENSITIVE)
    parent = writable_v1_memory_cgroup()
    if parent is None:
        pytest.skip("needs a writable cgroup v1 memory cgroup to make a stall in")
    cgroup = parent / f"memguard-psi-{os.getpid()}"
    cgroup.mkdir()
    try:
        (cgroup / "memory.limit_in_bytes").write_text(str(32 * MB))
        probe = v2_probe(tmp_path, pressure)
        kernel = KernelWake(lambda: wakes.append(time.monotonic()), psi_trigger=SENSITIVE)
        armed_at = time.monotonic()
        kernel.ensure(probe, THRESHOLDS)
        try:
            assert kernel.armed
            deadline = armed_at + 20
            while not wakes and time.monotonic() < deadline:
                stall_once(cgroup)
                wait_until(lambda: bool(wakes), timeout=0.5)
            assert wakes and kernel.fired >= 1
            # The kernel signals at most once per two-second window: a waker woken by
            # anything else (a poll for the always-ready POLLIN, say) would count thousands.
            time.sleep(1.0)
            windows = (time.monotonic() - armed_at) / 2
            assert kernel.fired <= windows + 2, (kernel.fired, windows)
        finally:  # a failed assertion must not leave the thread and the trigger behind
            kernel.close()
        assert not kernel.armed
    finally:
        for _ in range(50):  # the killed child leaves the cgroup a moment later
            try:
                cgroup.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def test_a_closed_waker_registers_nothing_after(tmp_path: Path, wakes: list[float]) -> None:
    """`Monitor.stop` closes the waker while a tick may still be running (a stop that timed
    out): that tick's `ensure` must not register a trigger and start a thread nobody closes."""
    probe = v2_probe(tmp_path, accepting(PSI_TRIGGER))
    kernel = KernelWake(lambda: wakes.append(time.monotonic()))
    kernel.ensure(probe, THRESHOLDS)
    assert kernel.armed and len(kernel_threads()) == 1
    kernel.close()
    assert not kernel.armed and not kernel_threads()
    kernel.ensure(probe, THRESHOLDS)  # the late tick
    assert not kernel.armed and not kernel_threads()
    kernel.close()  # idempotent
