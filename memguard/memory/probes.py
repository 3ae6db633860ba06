"""Probes: this process's memory, a cgroup's, and choosing one from a policy's scope."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil  # type: ignore[import-untyped, unused-ignore]  # stubs: types-psutil

import os
from pathlib import Path
from typing import Final, Mapping, Optional

from memguard._logging import logger
from memguard.errors import ProbeError
from memguard.memory.allocators import _HeapGauge
from memguard.memory.files import _KeptFile, _parse_int, _parse_stat, _read
from memguard.memory.heap import _physical_memory_cached
from memguard.memory.samples import MemorySample, PathLike, Probe

DEFAULT_CGROUP_ROOT: Final = "/sys/fs/cgroup"
"""Where cgroupfs is mounted (v2 unified, or the tmpfs holding the v1 hierarchies)."""

_PROC_SELF_CGROUP: Final = "/proc/self/cgroup"

# cgroup v1 reports "no limit" as LONG_MAX rounded down to a page (9223372036854771712);
# anything this large is a sentinel, not a limit.
_UNLIMITED_FLOOR: Final = 1 << 62




class _PsutilSelf:
    """psutil's view of this process, re-created after fork (a psutil.Process keeps its pid)."""

    __slots__ = ("_pid", "_process")

    def __init__(self) -> None:
        self._pid = -1
        self._process: Optional[psutil.Process] = None

    def rss(self) -> int:
        import psutil  # type: ignore[import-untyped, unused-ignore]
        pid = os.getpid()
        if self._process is None or self._pid != pid:
            self._process = psutil.Process(pid)
            self._pid = pid
        return int(self._process.memory_info().rss)


class _ProcReader:
    """RSS and swap of this process: /proc where it exists, psutil otherwise."""

    __slots__ = ("_page", "_psutil", "_statm", "_status")

    def __init__(self, proc_root: PathLike, *, swap: bool) -> None:
        self_dir = Path(proc_root) / "self"
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._statm: Optional[_KeptFile] = None
        self._status: Optional[_KeptFile] = None
        self._psutil: Optional[_PsutilSelf] = None
        statm = _KeptFile(self_dir / "statm")
        try:
            self._parse_rss(statm.read())
        except (OSError, ProbeError, AttributeError):  # AttributeError: no os.pread (Windows)
            statm.close()
            self._psutil = _PsutilSelf()
            return
        self._statm = statm
        if swap:
            status = _KeptFile(self_dir / "status")
            try:
                has_swap = b"\nVmSwap:" in status.read()
            except OSError:
                has_swap = False
            if has_swap:
                self._status = status
            else:
                status.close()

    @property
    def source(self) -> str:
        return "psutil" if self._statm is None else "procfs"

    def _parse_rss(self, text: bytes) -> int:
        # statm: size resident shared text lib data dt, in pages
        fields = text.split()
        if len(fields) < 2 or not fields[1].isdigit():
            raise ProbeError(f"/proc/self/statm: unexpected content {text[:80]!r}")
        return int(fields[1]) * self._page

    def rss(self) -> int:
        if self._statm is None:
            assert self._psutil is not None
            return self._psutil.rss()
        return self._parse_rss(_read(self._statm))

    def swap(self) -> int:
        if self._status is None:
            return 0
        text = _read(self._status)
        start = text.find(b"\nVmSwap:")
        if start < 0:
            return 0
        end = text.find(b"\n", start + 8)
        fields = text[start + 8 : end if end >= 0 else None].split()
        try:
            return int(fields[0]) * 1024  # reported in kB
        except (IndexError, ValueError):
            raise ProbeError(f"{self._status.path}: cannot parse VmSwap") from None

    def close(self) -> None:
        for kept in (self._statm, self._status):
            if kept is not None:
                kept.close()


def _check_limit(limit: Optional[int]) -> Optional[int]:
    if limit is not None and (type(limit) is not int or limit <= 0):
        raise ValueError(f"limit must be a positive int of bytes or None, not {limit!r}")
    return limit


class ProcessProbe:
    """This process's memory: ``usage = rss + swap``, scope ``"process"``.

    RSS comes from ``/proc/self/statm`` (field 2, in pages), kept open and re-read with one
    ``pread`` per sample; swap from ``VmSwap`` in ``/proc/self/status`` (also kept open,
    about 8 us more; ``swap=False`` skips it). Where ``/proc`` is missing (macOS, Windows)
    psutil ``memory_info().rss`` is used and swap reads as 0. Safe across ``fork``: the files
    are reopened in the child, which then reports its own memory.

    `limit` is reported as given (None = unknown); it is not guessed (`detect_limit()` finds
    a container's). `heap=False` leaves `MemorySample.heap` as None.
    `proc_root` is where procfs is mounted (tests point it elsewhere to force psutil).
    """

    scope: Final = "process"

    def __init__(
        self,
        limit: Optional[int] = None,
        *,
        swap: bool = True,
        heap: bool = True,
        proc_root: PathLike = "/proc",
    ) -> None:
        self.limit = _check_limit(limit)
        self._reader = _ProcReader(proc_root, swap=swap)
        self._heap = _HeapGauge() if heap else None

    @property
    def source(self) -> str:
        """``"procfs"`` or ``"psutil"``: where RSS is read from."""
        return self._reader.source

    def __call__(self) -> MemorySample:
        rss = self._reader.rss()
        swap = self._reader.swap()
        return MemorySample(
            usage=rss + swap,
            rss=rss,
            swap=swap,
            heap=None if self._heap is None else self._heap(),
            limit=self.limit,
            scope="process",
        )

    def close(self) -> None:
        """Release the kept-open files (the next sample reopens them)."""
        self._reader.close()

    def __repr__(self) -> str:
        return f"ProcessProbe(limit={self.limit!r}, source={self.source!r})"




def _own_cgroup(proc_cgroup: PathLike, version: int) -> Optional[str]:
    """This process's cgroup path relative to the hierarchy root, from /proc/self/cgroup.

    v2 uses the ``0::/path`` line, v1 the line whose controller list names ``memory``.
    """
    try:
        text = Path(proc_cgroup).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if (version == 2 and hierarchy == "0" and controllers == "") or (
            version == 1 and "memory" in controllers.split(",")
        ):
            return path.strip("/")
    return None


def _locate(root: Path, proc_cgroup: PathLike) -> Optional[tuple[int, Path, Path]]:
    """(version, directory of this process's memory cgroup, hierarchy root) or None."""
    if (root / "cgroup.controllers").is_file() or (root / "memory.current").is_file():
        version, top, marker = 2, root, "memory.current"
    elif (root / "memory" / "memory.usage_in_bytes").is_file():
        version, top, marker = 1, root / "memory", "memory.usage_in_bytes"
    elif (root / "memory.usage_in_bytes").is_file():  # root is the v1 memory hierarchy itself
        version, top, marker = 1, root, "memory.usage_in_bytes"
    else:
        return None
    own = _own_cgroup(proc_cgroup, version)
    # Without a cgroup namespace, /proc/self/cgroup names a path under the host's root that
    # the container's mount may not show; then the mount's top is the container's cgroup.
    for candidate in ((top / own) if own else None, top):
        if candidate is not None and (candidate / marker).is_file():
            return version, candidate, top
    return None


class CgroupProbe:
    """The container's memory from its cgroup, scope ``"cgroup"``.

    cgroup v2 (``cgroup.controllers`` or ``memory.current`` at `root`):
    ``usage = memory.current + memory.swap.current`` (swap when the file exists),
    limit = the smallest ``memory.max`` of the cgroup and its ancestors (``"max"`` = none).

    cgroup v1 (``root/memory/memory.usage_in_bytes``, or `root` is the memory hierarchy):
    ``usage = memory.usage_in_bytes - total_inactive_file + total_swap`` (from
    ``memory.stat``; ``inactive_file``, then ``total_cache``/``cache`` when that is missing),
    limit = the smaller of ``memory.limit_in_bytes`` and ``hierarchical_memory_limit``.

    In both, a limit of 2**62 or more (v1's "unlimited" sentinel) or above physical RAM counts
    as no limit (None). The cgroup directory is this process's own (from ``/proc/self/cgroup``,
    `proc_cgroup`) when it exists under `root`, else `root`'s top (what a container with a
    cgroup namespace sees). `rss` is this process's RSS, `swap` the cgroup's swap.

    `limit`, when given, overrides the cgroup's (a policy's ``limit = "512MB"``). Raises
    ValueError when `root` holds no cgroup memory files. A file that disappears or holds
    something unparsable raises `ProbeError` at sample time; optional files (swap, stat) that
    are missing count as zero.
    """

    scope: Final = "cgroup"

    def __init__(
        self,
        root: PathLike = DEFAULT_CGROUP_ROOT,
        *,
        limit: Optional[int] = None,
        heap: bool = True,
        proc_cgroup: PathLike = _PROC_SELF_CGROUP,
    ) -> None:
        self.root = Path(root)
        self._override = _check_limit(limit)
        found = _locate(self.root, proc_cgroup)
        if found is None:
            raise ValueError(
                f"no cgroup memory files under {self.root} (looked for cgroup v2 "
                "memory.current and cgroup v1 memory/memory.usage_in_bytes)"
            )
        self.version, self.path, top = found
        self._swap: Optional[_KeptFile] = None
        self._stat: Optional[_KeptFile] = None
        if self.version == 2:
            self._usage = _KeptFile(self.path / "memory.current")
            self._swap = self._optional(self.path / "memory.swap.current")
            # memory.max of the cgroup and each ancestor up to the mount's top: the tightest binds.
            dirs = [self.path, *(top / p for p in self.path.relative_to(top).parents)]
            self._limits = [
                kept for kept in (self._optional(d / "memory.max") for d in dirs) if kept
            ]
        else:
            self._usage = _KeptFile(self.path / "memory.usage_in_bytes")
            self._stat = self._optional(self.path / "memory.stat")
            limit_file = self._optional(self.path / "memory.limit_in_bytes")
            self._limits = [] if limit_file is None else [limit_file]
        self._process = _ProcReader("/proc", swap=False)
        self._heap = _HeapGauge() if heap else None

    @staticmethod
    def _optional(path: Path) -> Optional[_KeptFile]:
        return _KeptFile(path) if path.is_file() else None

    @property
    def limit(self) -> Optional[int]:
        """The limit samples report: the override if given, else the cgroup's."""
        return self._override if self._override is not None else self.read_limit()

    def read_limit(self) -> Optional[int]:
        """The cgroup's own memory limit in bytes, or None when it has none (ignores `limit=`)."""
        stat = self._read_stat() if self.version == 1 else {}
        return self._cgroup_limit(stat)

    def _read_stat(self) -> dict[str, int]:
        return {} if self._stat is None else _parse_stat(self._stat, _read(self._stat))

    def _cgroup_limit(self, stat: Mapping[str, int]) -> Optional[int]:
        values: list[int] = []
        for kept in self._limits:
            text = _read(kept).strip()
            if text != b"max":
                values.append(_parse_int(kept, text))
        if "hierarchical_memory_limit" in stat:
            values.append(stat["hierarchical_memory_limit"])
        if not values:
            return None
        limit = min(values)
        if limit >= _UNLIMITED_FLOOR or limit > _physical_memory_cached():
            return None
        if limit <= 0:
            raise ProbeError(f"{self.path}: memory limit of {limit} bytes")
        return limit

    def __call__(self) -> MemorySample:
        usage = _parse_int(self._usage, _read(self._usage))
        if self.version == 2:
            swap = 0 if self._swap is None else _parse_int(self._swap, _read(self._swap))
            stat: Mapping[str, int] = {}
            usage += swap
        else:
            stat = self._read_stat()
            cache = _first(stat, "total_inactive_file", "inactive_file", "total_cache", "cache")
            swap = _first(stat, "total_swap", "swap")
            usage = max(usage - cache, 0) + swap
        limit = self._override if self._override is not None else self._cgroup_limit(stat)
        return MemorySample(
            usage=usage,
            rss=self._process.rss(),
            swap=swap,
            heap=None if self._heap is None else self._heap(),
            limit=limit,
            scope="cgroup",
        )

    def close(self) -> None:
        """Release the kept-open files (the next sample reopens them)."""
        for kept in (self._usage, self._swap, self._stat, *self._limits):
            if kept is not None:
                kept.close()
        self._process.close()

    def __repr__(self) -> str:
        root, path = str(self.root), str(self.path)
        return f"CgroupProbe(root={root!r}, version={self.version}, path={path!r})"


def _first(stat: Mapping[str, int], *keys: str) -> int:
    for key in keys:
        if key in stat:
            return stat[key]
    return 0




def make_probe(
    scope: str = "auto",
    *,
    cgroup_root: PathLike = DEFAULT_CGROUP_ROOT,
    limit: Optional[int] = None,
) -> Probe:
    """The probe for a policy's ``scope``: ``"process"``, ``"cgroup"`` or ``"auto"``.

    ``auto`` is the cgroup probe when the cgroup has a memory limit (a container), else the
    process probe: without a limit the cgroup's usage (often the whole machine's) is not what
    this process should be judged by. `limit` overrides the reported limit in either probe.
    Raises ValueError for an unknown scope, or for ``"cgroup"`` without cgroup memory files.
    """
    if scope == "process":
        return ProcessProbe(limit)
    if scope == "cgroup":
        return CgroupProbe(cgroup_root, limit=limit)
    if scope != "auto":
        raise ValueError(f"unknown memory scope {scope!r}; expected 'process', 'cgroup' or 'auto'")
    try:
        probe = CgroupProbe(cgroup_root, limit=limit)
        if probe.read_limit() is not None:
            return probe
        probe.close()
    except ValueError:
        pass  # no cgroup files: not in a (visible) cgroup
    except ProbeError as exc:
        logger.warning("memory scope auto: ignoring unreadable cgroup (%s); using the process", exc)
    return ProcessProbe(limit)


def detect_limit(cgroup_root: PathLike = DEFAULT_CGROUP_ROOT) -> Optional[int]:
    """``limit = "auto"``: the cgroup's memory limit when one is set, else None (no limit
    known).

    Never the machine's RAM: a worker judged against all of it would pass every check while
    the platform kills it, and each of several workers would count the whole machine as its
    own. Without a limit, thresholds given as percentages stay off (DESIGN section 4).
    """
    try:
        probe = CgroupProbe(cgroup_root, heap=False)
    except ValueError:
        return None
    try:
        return probe.read_limit()
    except ProbeError as exc:
        logger.warning("limit auto: ignoring unreadable cgroup limit (%s); no limit known", exc)
        return None
    finally:
        probe.close()
