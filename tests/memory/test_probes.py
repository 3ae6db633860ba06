"""The probe layer: fake cgroup v1/v2 trees, the process probe against psutil, fork safety."""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest

from memguard.errors import MemguardError, ProbeError
from memguard.memory import allocators, heap
from memguard.memory.allocators import heap_bytes
from memguard.memory.heap import physical_memory
from memguard.memory.probes import CgroupProbe, ProcessProbe, detect_limit, make_probe
from memguard.memory.reclaim import Reclaim, detailed_usage, read_rss, reclaim
from memguard.memory.samples import MemorySample

MiB = 2**20
V1_UNLIMITED = 9223372036854771712  # what cgroup v1 writes for "no limit"
HAS_PROC = Path("/proc/self/statm").is_file()
HAS_MALLINFO2 = heap_bytes() is not None


def write(path: Path, text: str) -> None:
    """Write in place (same inode), as the kernel updates cgroup files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_tree(
    root: Path,
    current: int,
    *,
    max_: str = "max",
    swap: Optional[int] = None,
    sub: str = "",
) -> Path:
    """A cgroup v2 mount at `root` with the memory files in `root/sub`."""
    write(root / "cgroup.controllers", "cpu io memory pids\n")
    leaf = root / sub if sub else root
    write(leaf / "memory.current", f"{current}\n")
    write(leaf / "memory.max", f"{max_}\n")
    if swap is not None:
        write(leaf / "memory.swap.current", f"{swap}\n")
    return leaf


def v1_tree(
    root: Path,
    usage: int,
    *,
    limit: int = V1_UNLIMITED,
    stat: Optional[dict[str, int]] = None,
) -> Path:
    """A cgroup v1 layout: `root/memory` is the memory hierarchy."""
    mem = root / "memory"
    write(mem / "memory.usage_in_bytes", f"{usage}\n")
    write(mem / "memory.limit_in_bytes", f"{limit}\n")
    if stat is not None:
        write(mem / "memory.stat", "".join(f"{k} {v}\n" for k, v in stat.items()))
    return mem


@pytest.fixture
def proc_cgroup(tmp_path: Path) -> Path:
    """A /proc/self/cgroup naming the root cgroup (what a container with a namespace sees)."""
    path = tmp_path / "proc-self-cgroup"
    path.write_text("0::/\n4:memory:/\n")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "cgroup"
    path.mkdir()
    return path


# --------------------------------------------------------------------------------------------
# MemorySample


def test_sample_to_dict_round_trips_through_json() -> None:
    sample = MemorySample(
        usage=300 * MiB,
        rss=280 * MiB,
        swap=20 * MiB,
        heap=200 * MiB,
        limit=512 * MiB,
        scope="cgroup",
    )
    data = json.loads(json.dumps(sample.to_dict()))
    assert data == {
        "usage": 300 * MiB,
        "rss": 280 * MiB,
        "swap": 20 * MiB,
        "heap": 200 * MiB,
        "limit": 512 * MiB,
        "scope": "cgroup",
        "utilization": 300 / 512,
    }
    assert MemorySample.from_dict(data) == sample


def test_sample_without_limit_or_heap() -> None:
    sample = MemorySample(usage=10, rss=10, swap=0, heap=None, limit=None, scope="process")
    assert sample.utilization is None
    assert json.loads(json.dumps(sample.to_dict()))["heap"] is None
    assert MemorySample.from_dict(sample.to_dict()) == sample


def test_sample_is_frozen_and_slotted() -> None:
    sample = MemorySample(usage=1, rss=1, swap=0, heap=None, limit=None, scope="process")
    with pytest.raises(AttributeError):
        sample.usage = 2  # type: ignore[misc]
    assert not hasattr(sample, "__dict__")


@pytest.mark.parametrize(
    "changes",
    [{"usage": -1}, {"rss": 1.5}, {"heap": -3}, {"limit": 0}, {"scope": "container"}],
)
def test_sample_rejects_bad_values(changes: dict[str, object]) -> None:
    fields: dict[str, object] = dict(usage=1, rss=1, swap=0, heap=None, limit=None)
    fields["scope"] = "process"
    fields.update(changes)
    with pytest.raises(ValueError):
        MemorySample(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# cgroup v2


def test_v2_without_limit(root: Path, proc_cgroup: Path) -> None:
    v2_tree(root, 123 * MiB)
    probe = CgroupProbe(root, proc_cgroup=proc_cgroup)
    sample = probe()
    assert (probe.version, probe.path) == (2, root)
    assert (sample.usage, sample.swap, sample.limit, sample.scope) == (123 * MiB, 0, None, "cgroup")
    assert probe.read_limit() is None


def test_v2_with_limit_and_swap(root: Path, proc_cgroup: Path) -> None:
    v2_tree(root, 400 * MiB, max_=str(512 * MiB), swap=30 * MiB)
    sample = CgroupProbe(root, proc_cgroup=proc_cgroup)()
    assert sample.usage == 430 * MiB  # memory.current + memory.swap.current
    assert sample.swap == 30 * MiB
    assert sample.limit == 512 * MiB
    assert sample.utilization == pytest.approx(430 / 512)


def test_v2_rss_is_this_process(root: Path, proc_cgroup: Path) -> None:
    v2_tree(root, 5 * 2**30)
    sample = CgroupProbe(root, proc_cgroup=proc_cgroup)()
    assert sample.rss == pytest.approx(psutil.Process().memory_info().rss, abs=4 * MiB)
    assert (sample.heap is not None) == HAS_MALLINFO2


def test_v2_own_cgroup_and_tighter_ancestor_limit(root: Path, tmp_path: Path) -> None:
    # A host-style mount: the root has no memory.current; this process lives in app/worker.
    write(root / "cgroup.controllers", "memory\n")
    v2_tree(root, 50 * MiB, max_=str(256 * MiB), sub="app/worker")
    write(root / "app" / "memory.max", f"{128 * MiB}\n")
    write(root / "app" / "memory.current", f"{90 * MiB}\n")
    own = tmp_path / "own"
    own.write_text("0::/app/worker\n")
    probe = CgroupProbe(root, proc_cgroup=own)
    assert probe.path == root / "app" / "worker"
    sample = probe()
    assert sample.usage == 50 * MiB  # the worker's own usage, not the parent's
    assert sample.limit == 128 * MiB  # the parent's limit binds


def test_own_cgroup_missing_under_mount_falls_back_to_top(root: Path, tmp_path: Path) -> None:
    # No cgroup namespace: /proc/self/cgroup names a host path the container cannot see.
    v2_tree(root, 70 * MiB, max_=str(256 * MiB))
    own = tmp_path / "own"
    own.write_text("0::/kubepods/pod1234/abcdef\n")
    probe = CgroupProbe(root, proc_cgroup=own)
    assert probe.path == root
    assert probe().limit == 256 * MiB


def test_files_are_reread_each_sample(root: Path, proc_cgroup: Path) -> None:
    leaf = v2_tree(root, 100 * MiB, max_=str(512 * MiB))
    probe = CgroupProbe(root, proc_cgroup=proc_cgroup)
    assert probe().usage == 100 * MiB
    write(leaf / "memory.current", f"{300 * MiB}\n")
    write(leaf / "memory.max", "max\n")
    sample = probe()
    assert (sample.usage, sample.limit) == (300 * MiB, None)


def test_limit_override(root: Path, proc_cgroup: Path) -> None:
    v2_tree(root, 100 * MiB, max_=str(1024 * MiB))
    probe = CgroupProbe(root, limit=512 * MiB, proc_cgroup=proc_cgroup)
    assert probe().limit == 512 * MiB
    assert probe.limit == 512 * MiB
    assert probe.read_limit() == 1024 * MiB


def test_limit_above_physical_ram_means_none(root: Path, proc_cgroup: Path) -> None:
    v2_tree(root, 100 * MiB, max_=str(physical_memory() * 2))
    assert CgroupProbe(root, proc_cgroup=proc_cgroup)().limit is None


# --------------------------------------------------------------------------------------------
# cgroup v1


def test_v1_usage_minus_inactive_file_plus_swap(root: Path, proc_cgroup: Path) -> None:
    stat = {"cache": 80 * MiB, "total_inactive_file": 60 * MiB, "total_swap": 10 * MiB}
    v1_tree(root, 300 * MiB, limit=512 * MiB, stat=stat)
    probe = CgroupProbe(root, proc_cgroup=proc_cgroup)
    sample = probe()
    assert probe.version == 1
    assert sample.usage == 300 * MiB - 60 * MiB + 10 * MiB
    assert sample.swap == 10 * MiB
    assert (sample.limit, sample.scope) == (512 * MiB, "cgroup")


def test_v1_falls_back_to_cache_without_inactive_file(root: Path, proc_cgroup: Path) -> None:
    v1_tree(root, 300 * MiB, limit=512 * MiB, stat={"cache": 80 * MiB, "rss": 220 * MiB})
    assert CgroupProbe(root, proc_cgroup=proc_cgroup)().usage == 220 * MiB


def test_v1_without_memory_stat(root: Path, proc_cgroup: Path) -> None:
    v1_tree(root, 300 * MiB, limit=512 * MiB)
    sample = CgroupProbe(root, proc_cgroup=proc_cgroup)()
    assert (sample.usage, sample.swap, sample.limit) == (300 * MiB, 0, 512 * MiB)


def test_v1_unlimited_sentinel(root: Path, proc_cgroup: Path) -> None:
    v1_tree(root, 300 * MiB, stat={"hierarchical_memory_limit": V1_UNLIMITED})
    probe = CgroupProbe(root, proc_cgroup=proc_cgroup)
    assert probe().limit is None
    assert probe.read_limit() is None


def test_v1_hierarchical_limit_binds(root: Path, proc_cgroup: Path) -> None:
    v1_tree(root, 100 * MiB, stat={"hierarchical_memory_limit": 256 * MiB})
    assert CgroupProbe(root, proc_cgroup=proc_cgroup)().limit == 256 * MiB


def test_v1_own_cgroup(root: Path, tmp_path: Path) -> None:
    v1_tree(root, 900 * MiB)
    own_dir = root / "memory" / "docker" / "abc"
    write(own_dir / "memory.usage_in_bytes", f"{40 * MiB}\n")
    write(own_dir / "memory.limit_in_bytes", f"{256 * MiB}\n")
    own = tmp_path / "own"
    own.write_text("12:pids:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    sample = CgroupProbe(root, proc_cgroup=own)()
    assert (sample.usage, sample.limit) == (40 * MiB, 256 * MiB)


def test_v1_root_is_the_memory_hierarchy(root: Path, proc_cgroup: Path) -> None:
    mem = v1_tree(root, 100 * MiB, limit=300 * MiB)
    assert CgroupProbe(mem, proc_cgroup=proc_cgroup)().limit == 300 * MiB


# --------------------------------------------------------------------------------------------
# Malformed and missing files


@pytest.mark.parametrize(
    ("name", "text"),
    [("memory.current", "lots\n"), ("memory.max", "12e9\n"), ("memory.swap.current", "")],
)
def test_v2_malformed_file_is_a_clear_error(
    root: Path, proc_cgroup: Path, name: str, text: str
) -> None:
    v2_tree(root, 100 * MiB, max_=str(512 * MiB), swap=0)
    probe = CgroupProbe(root, proc_cgroup=proc_cgroup)
    write(root / name, text)
    with pytest.raises(ProbeError, match=name) as info:
        probe()
    assert isinstance(info.value, MemguardError)
    assert repr(text.strip())[1:-1] in str(info.value)


def test_v1_malformed_stat_is_a_clear_error(root: Path, proc_cgroup: Path) -> None:
    mem = v1_tree(root, 100 * MiB, stat={"cache": 1})
    write(mem / "memory.stat", "cache 1\ntotal_inactive_file ???\n")
    with pytest.raises(ProbeError, match=r"memory\.stat.*total_inactive_file"):
        CgroupProbe(root, proc_cgroup=proc_cgroup)()


def test_usage_file_vanishing_is_a_probe_error(root: Path, proc_cgroup: Path) -> None:
    v2_tree(root, 100 * MiB)
    probe = CgroupProbe(root, proc_cgroup=proc_cgroup)
    (root / "memory.current").unlink()
    with pytest.raises(ProbeError, match=r"cannot read .*memory\.current"):
        probe()


def test_no_cgroup_files(root: Path, proc_cgroup: Path) -> None:
    with pytest.raises(ValueError, match="no cgroup memory files"):
        CgroupProbe(root, proc_cgroup=proc_cgroup)
    with pytest.raises(ValueError, match="no cgroup memory files"):
        make_probe("cgroup", cgroup_root=root)
    assert isinstance(make_probe("auto", cgroup_root=root), ProcessProbe)
    assert detect_limit(root) is None  # no limit known: never the machine's RAM


def test_auto_with_unparsable_limit_falls_back_to_process(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    v2_tree(root, 100 * MiB, max_="a lot")
    assert isinstance(make_probe("auto", cgroup_root=root), ProcessProbe)
    assert "unreadable cgroup" in caplog.text
    assert detect_limit(root) is None  # no limit known: never the machine's RAM


# --------------------------------------------------------------------------------------------
# make_probe and detect_limit


def test_auto_picks_cgroup_only_when_a_limit_is_set(root: Path) -> None:
    leaf = v2_tree(root, 100 * MiB)
    assert isinstance(make_probe("auto", cgroup_root=root), ProcessProbe)
    assert isinstance(make_probe(cgroup_root=root), ProcessProbe)
    write(leaf / "memory.max", f"{512 * MiB}\n")
    probe = make_probe("auto", cgroup_root=root)
    assert isinstance(probe, CgroupProbe)
    assert probe().scope == "cgroup"


def test_auto_v1_unlimited_is_process(root: Path) -> None:
    v1_tree(root, 100 * MiB)
    assert isinstance(make_probe("auto", cgroup_root=root), ProcessProbe)


def test_explicit_scopes_and_limit(root: Path) -> None:
    v2_tree(root, 100 * MiB)
    process = make_probe("process", cgroup_root=root, limit=512 * MiB)
    assert isinstance(process, ProcessProbe)
    assert process().limit == 512 * MiB
    assert process().scope == "process"
    cgroup = make_probe("cgroup", cgroup_root=root, limit=256 * MiB)
    assert isinstance(cgroup, CgroupProbe)
    assert (cgroup().usage, cgroup().limit) == (100 * MiB, 256 * MiB)


def test_unknown_scope() -> None:
    with pytest.raises(ValueError, match="unknown memory scope 'container'"):
        make_probe("container")


def test_detect_limit(root: Path) -> None:
    leaf = v2_tree(root, 100 * MiB)
    assert detect_limit(root) is None  # no limit known: never the machine's RAM
    write(leaf / "memory.max", f"{512 * MiB}\n")
    assert detect_limit(root) == 512 * MiB


def test_physical_memory_matches_psutil() -> None:
    assert physical_memory() == psutil.virtual_memory().total > 0


# --------------------------------------------------------------------------------------------
# ProcessProbe


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc")
def test_process_probe_agrees_with_psutil() -> None:
    probe = ProcessProbe()
    assert probe.source == "procfs"
    for _ in range(3):
        sample = probe()
        info = psutil.Process().memory_full_info()
        assert sample.rss == pytest.approx(info.rss, abs=2 * MiB)
        assert sample.swap == pytest.approx(getattr(info, "swap", 0), abs=2 * MiB)
        assert sample.usage == sample.rss + sample.swap
        assert (sample.scope, sample.limit) == ("process", None)


def test_process_probe_follows_an_allocation() -> None:
    probe = ProcessProbe(swap=False)
    before = probe().rss
    block = b"\x01" * (64 * MiB)
    grown = probe().rss
    assert grown - before >= 60 * MiB, (before, grown)
    del block


def test_psutil_fallback_without_proc(tmp_path: Path) -> None:
    probe = ProcessProbe(limit=512 * MiB, proc_root=tmp_path)  # no tmp_path/self/statm
    assert probe.source == "psutil"
    sample = probe()
    assert sample.rss == pytest.approx(psutil.Process().memory_info().rss, abs=2 * MiB)
    assert (sample.swap, sample.limit) == (0, 512 * MiB)


def test_process_probe_options() -> None:
    sample = ProcessProbe(swap=False, heap=False)()
    assert (sample.swap, sample.heap) == (0, None)
    with pytest.raises(ValueError, match="limit"):
        ProcessProbe(limit=0)
    with pytest.raises(ValueError, match="limit"):
        ProcessProbe(limit="512MB")  # type: ignore[arg-type]


def test_close_then_sample_reopens() -> None:
    probe = ProcessProbe()
    first = probe()
    probe.close()
    assert probe().rss == pytest.approx(first.rss, abs=4 * MiB)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_reads_its_own_memory() -> None:
    probe = ProcessProbe(swap=False)
    parent_before = probe().rss  # the kept-open statm now describes the parent
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only os._exit leaves, whatever happens
        status = 1
        try:
            os.close(read_end)
            child_before = probe().rss
            block = b"\x01" * (50 * MiB)
            child_after = probe().rss
            psutil_after = psutil.Process().memory_info().rss
            report = {
                "before": child_before,
                "after": child_after,
                "psutil": psutil_after,
                "len": len(block),
            }
            os.write(write_end, json.dumps(report).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    child = json.loads(data)
    parent_after = probe().rss
    assert child["after"] - child["before"] >= 45 * MiB, child
    assert child["after"] == pytest.approx(child["psutil"], abs=2 * MiB), child
    assert parent_after - parent_before < 20 * MiB, (parent_before, parent_after)


# --------------------------------------------------------------------------------------------
# Heap figure, reclaim, on-demand figures


@pytest.mark.skipif(not HAS_MALLINFO2, reason="needs glibc mallinfo2")
def test_heap_bytes_counts_large_objects() -> None:
    before = heap_bytes()
    assert before is not None
    block = b"\x01" * (32 * MiB)
    during = heap_bytes()
    assert during is not None
    assert during - before >= 31 * MiB
    del block
    after = heap_bytes()
    assert after is not None
    assert during - after >= 31 * MiB


def test_heap_gauge_bounds_the_cost_of_a_slow_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def slow_heap() -> int:
        calls.append(1)
        time.sleep(0.005)  # a fragmented heap: mallinfo2 walks every free chunk
        return len(calls)

    monkeypatch.setattr(allocators, "heap_bytes", slow_heap)
    probe = ProcessProbe()
    assert probe().heap == 1
    assert probe().heap == 1  # reused: the next fresh read waits ~5 s (0.1% duty)
    assert len(calls) == 1


def test_reclaim_collects_cycles() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    gc.collect()
    for _ in range(50):
        Node()
    result = reclaim()
    assert isinstance(result, Reclaim)
    assert result.collected >= 50
    assert result.trimmed == (heap._malloc_trim is not None)
    assert result.seconds >= 0
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_reclaim_trims_on_glibc() -> None:
    if heap._malloc_trim is None:
        pytest.skip("not glibc")
    assert reclaim().trimmed is True


def test_read_rss() -> None:
    assert read_rss() == pytest.approx(psutil.Process().memory_info().rss, abs=4 * MiB)
    assert read_rss(os.getpid()) == pytest.approx(read_rss(), abs=4 * MiB)
    with pytest.raises(ProcessLookupError):
        read_rss(2**22 + 12345)  # above Linux's pid_max ceiling


def test_detailed_usage() -> None:
    details = detailed_usage()
    assert details["pid"] == os.getpid()
    assert 0 < details["uss"] <= details["rss"] + 4 * MiB
    if sys.platform.startswith("linux"):
        assert details["pss"] > 0
    assert all(isinstance(v, int) for v in details.values())
    with pytest.raises(ProcessLookupError):
        detailed_usage(2**22 + 12345)


def test_heap_gauge_stays_fresh_when_cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fast_heap() -> int:
        calls.append(1)
        return len(calls)

    monkeypatch.setattr(allocators, "heap_bytes", fast_heap)
    probe = ProcessProbe()
    assert [probe().heap for _ in range(3)] == [1, 2, 3]
