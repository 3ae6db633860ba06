"""Memory probes: how much memory this process (or its container) uses, and what it can give back.

This is the only module in memguard that reads ``/proc`` or ``/sys/fs/cgroup``. Everything
else receives a *probe*, a zero-argument callable returning a `MemorySample`, so tests and
users can inject `memguard.testing.FakeProbe` the way cachetools injects ``timer=``.

- `ProcessProbe`: this process's RSS (+ swap), from a kept-open ``/proc/self/statm`` (psutil
  where there is no ``/proc``).
- `CgroupProbe`: the container's usage and limit, cgroup v2 or v1.
- `make_probe` picks one for ``scope = "process" | "cgroup" | "auto"``; `detect_limit` resolves
  ``limit = "auto"``.
- `heap_bytes` is a cheap figure of the bytes malloc holds for live objects;
  `detect_allocator` says which allocators serve the process (pymalloc, malloc or mimalloc for
  small objects; glibc, jemalloc or other underneath); `reclaim` runs ``gc.collect()`` and that
  allocator's own hook (glibc ``malloc_trim(0)``, jemalloc's arena purge, or "no hook");
  `detailed_usage` gives USS/PSS on demand.

See docs/memory.md for what each probe reads, its cost and why.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import sys
import sysconfig
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Final, Mapping, Optional, Protocol, Union

import attrs
import psutil  # type: ignore[import-untyped, unused-ignore]  # stubs: types-psutil

from memguard.errors import MemguardError

__all__ = [
    "DEFAULT_CGROUP_ROOT",
    "MALLOCS",
    "NO_HOOK",
    "SCOPES",
    "SMALL_OBJECT_ALLOCATORS",
    "TRIMS",
    "Allocator",
    "CgroupProbe",
    "MemorySample",
    "Probe",
    "ProbeError",
    "ProcessProbe",
    "Reclaim",
    "detailed_usage",
    "detect_allocator",
    "detect_limit",
    "heap_bytes",
    "make_probe",
    "physical_memory",
    "read_rss",
    "reclaim",
]

log = logging.getLogger("memguard")

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_CGROUP_ROOT: Final = "/sys/fs/cgroup"
"""Where cgroupfs is mounted (v2 unified, or the tmpfs holding the v1 hierarchies)."""

SCOPES: Final = ("process", "cgroup", "auto")
"""Where memory is read from, as a policy's ``scope`` says it (the one home of these names):
`make_probe` takes any of them; a sample's `MemorySample.scope` is one of the first two."""

_PROC_SELF_CGROUP: Final = "/proc/self/cgroup"

# cgroup v1 reports "no limit" as LONG_MAX rounded down to a page (9223372036854771712);
# anything this large is a sentinel, not a limit.
_UNLIMITED_FLOOR: Final = 1 << 62

# Reading the heap figure may cost milliseconds on a fragmented glibc heap (mallinfo2 walks every
# free chunk). Once a read costs more than _HEAP_SLOW, probes refresh it at most as often as
# keeps that cost under _HEAP_DUTY of the time; cheaper reads are always fresh.
_HEAP_SLOW: Final = 0.001
_HEAP_DUTY: Final = 0.001


class ProbeError(MemguardError, OSError):
    """A memory file could not be read or held something memguard cannot parse.

    The message names the file and the offending text. The monitor logs it and carries on;
    code calling a probe directly sees it raised.
    """


# --------------------------------------------------------------------------------------------
# The sample


def _size(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative int of bytes, not {value!r}")


def _optional_size(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _size(instance, attribute, value)


def _optional_limit(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (type(value) is not int or value <= 0):
        raise ValueError(f"limit must be a positive int of bytes or None, not {value!r}")


def _scope(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in SCOPES[:2]:
        raise ValueError(f"scope must be one of {SCOPES[:2]}, not {value!r}")


@attrs.frozen(slots=True)
class MemorySample:
    """One reading of memory, in bytes.

    `usage` is the figure thresholds compare against: RSS + swap for the process scope, the
    cgroup's usage (see `CgroupProbe`) for the cgroup scope. `rss` is always this process's
    resident set, so `heap` / `rss` stays meaningful in either scope. `heap` is `heap_bytes()`
    (None where unavailable), `limit` the memory limit when known.
    """

    usage: int = attrs.field(validator=_size)
    rss: int = attrs.field(validator=_size)
    swap: int = attrs.field(validator=_size)
    heap: Optional[int] = attrs.field(validator=_optional_size)
    limit: Optional[int] = attrs.field(validator=_optional_limit)
    scope: str = attrs.field(validator=_scope)

    @property
    def utilization(self) -> Optional[float]:
        """`usage` / `limit` (1.0 = at the limit; may exceed 1 with swap), None without a limit."""
        return None if self.limit is None else self.usage / self.limit

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: the fields (sizes in bytes) plus `utilization`."""
        return {
            "usage": self.usage,
            "rss": self.rss,
            "swap": self.swap,
            "heap": self.heap,
            "limit": self.limit,
            "scope": self.scope,
            "utilization": self.utilization,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemorySample:
        """Rebuild a sample from `to_dict()` output (for example a `/memory` payload).

        Derived keys (`utilization`) and unknown keys are ignored.
        """
        return cls(
            usage=data["usage"],
            rss=data["rss"],
            swap=data.get("swap", 0),
            heap=data.get("heap"),
            limit=data.get("limit"),
            scope=data["scope"],
        )


class Probe(Protocol):
    """Anything that returns a fresh `MemorySample` when called: a probe class or a function."""

    def __call__(self) -> MemorySample: ...


# --------------------------------------------------------------------------------------------
# Kept-open files


_kept_files: weakref.WeakSet[_KeptFile] = weakref.WeakSet()


class _KeptFile:
    """A file opened once and re-read from offset 0 with ``pread``: one syscall per read.

    ``pread`` has no shared offset, so threads, and a forked child holding the same descriptor,
    cannot disturb each other. The file is reopened when the pid changes, because ``/proc/self``
    is resolved when a file is opened: after ``fork`` the inherited descriptor still describes
    the parent.
    """

    __slots__ = ("__weakref__", "_lock", "_size", "_state", "path")

    def __init__(self, path: PathLike) -> None:
        self.path = os.fspath(path)
        self._state: tuple[int, int] = (-1, 0)  # (fd, pid that opened it)
        self._size = 4096
        self._lock = threading.Lock()
        _kept_files.add(self)

    def read(self) -> bytes:
        """The whole current content of the file.

        Raises OSError when it cannot be opened or read.
        """
        fd, owner = self._state
        if owner != os.getpid():
            fd = self._reopen()
        data = os.pread(fd, self._size, 0)
        while len(data) >= self._size:  # the file outgrew the buffer: read it whole
            self._size *= 4
            data = os.pread(fd, self._size, 0)
        return data

    def _reopen(self) -> int:
        with self._lock:
            pid = os.getpid()
            fd, owner = self._state
            if owner == pid:
                return fd
            new = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._state = (new, pid)
            # Only a process whose pid differs from `owner` gets here, and no thread of it ever
            # reads the old descriptor (reads check the owner first), so closing it is safe.
            if fd >= 0:
                os.close(fd)
            return new

    def _after_fork(self) -> None:
        # The lock may have been held by a parent thread that does not exist in the child.
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the descriptor; a later `read` reopens it."""
        with self._lock:
            fd, owner = self._state
            self._state = (-1, 0)
            if fd >= 0 and owner == os.getpid():
                os.close(fd)

    def __del__(self) -> None:
        fd, owner = self._state
        if fd >= 0 and owner == os.getpid():
            with contextlib.suppress(OSError):
                os.close(fd)


def _reset_kept_files_after_fork() -> None:
    for kept in list(_kept_files):
        kept._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_kept_files_after_fork)


def _read(kept: _KeptFile) -> bytes:
    try:
        return kept.read()
    except OSError as exc:
        raise ProbeError(f"cannot read {kept.path}: {exc.strerror or exc}") from exc


def _parse_int(kept: _KeptFile, text: bytes) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ProbeError(f"{kept.path}: expected a number of bytes, got {text[:80]!r}") from None


def _parse_stat(kept: _KeptFile, text: bytes) -> dict[str, int]:
    """A ``key value`` per line file (cgroup memory.stat) as a dict."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(b" ")
        try:
            out[key.decode("ascii")] = int(value)
        except ValueError:
            raise ProbeError(f"{kept.path}: cannot parse line {line[:80]!r}") from None
    return out


# --------------------------------------------------------------------------------------------
# Machine facts and the heap figure

_physical: Optional[int] = None


def physical_memory() -> int:
    """Total physical RAM of the machine in bytes (psutil ``virtual_memory().total``)."""
    return int(psutil.virtual_memory().total)


def _physical_memory_cached() -> int:
    global _physical
    if _physical is None:
        _physical = physical_memory()
    return _physical


class _MallInfo2(ctypes.Structure):
    # struct mallinfo2 from glibc's <malloc.h> (glibc >= 2.33): ten size_t fields.
    _fields_ = [
        ("arena", ctypes.c_size_t),  # bytes obtained from the system with sbrk
        ("ordblks", ctypes.c_size_t),  # free chunks
        ("smblks", ctypes.c_size_t),  # free fastbin chunks
        ("hblks", ctypes.c_size_t),  # mmapped chunks
        ("hblkhd", ctypes.c_size_t),  # bytes in mmapped chunks (large allocations)
        ("usmblks", ctypes.c_size_t),  # always 0
        ("fsmblks", ctypes.c_size_t),  # bytes in free fastbin chunks
        ("uordblks", ctypes.c_size_t),  # bytes in use in the arenas
        ("fordblks", ctypes.c_size_t),  # bytes free in the arenas
        ("keepcost", ctypes.c_size_t),  # releasable bytes at the top of the main arena
    ]


def _libc_function(name: str) -> Any:
    """A function of the C library this process runs on, or None (not glibc, or Windows)."""
    try:
        libc = ctypes.CDLL(None)
        return getattr(libc, name)
    except (OSError, TypeError, AttributeError):
        return None


_mallinfo2: Any = _libc_function("mallinfo2")
if _mallinfo2 is not None:
    _mallinfo2.restype = _MallInfo2
    _mallinfo2.argtypes = []

_malloc_trim: Any = _libc_function("malloc_trim")
if _malloc_trim is not None:
    _malloc_trim.restype = ctypes.c_int
    _malloc_trim.argtypes = [ctypes.c_size_t]


# --------------------------------------------------------------------------------------------
# Which allocators serve this process, and their hooks

SMALL_OBJECT_ALLOCATORS: Final = ("pymalloc", "malloc", "mimalloc")
"""The values of `Allocator.small_objects`: who serves Python objects of 512 bytes or less."""

MALLOCS: Final = ("glibc", "jemalloc", "other")
"""The values of `Allocator.malloc`: the C library ``malloc`` this process calls."""

NO_HOOK: Final = "no hook"
TRIMS: Final = ("malloc_trim", "jemalloc_purge", NO_HOOK)
"""The values of `Allocator.trim` and `Reclaim.mechanism`: what `reclaim()` calls."""

# jemalloc 5's MALLCTL_ARENAS_ALL: the arena index meaning "every arena" in arena.<i>.* names.
# Before 5.0 that index was the value of "arenas.narenas".
_JEMALLOC_ARENAS_ALL: Final = 4096


def _one_of(allowed: tuple[str, ...]) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in allowed:
            raise ValueError(f"{attribute.name} must be one of {allowed}, not {value!r}")
    return check


@attrs.frozen(slots=True)
class Allocator:
    """Which allocators serve this process, as detected by `detect_allocator()`.

    `small_objects`: ``"pymalloc"`` (CPython's default: 1 MiB arenas of 16 KiB pools,
    unmapped only once every object in the arena is free), ``"malloc"`` (``PYTHONMALLOC=malloc``
    or a build without pymalloc: small objects come from the C malloc, so its trim reaches
    them) or ``"mimalloc"`` (``PYTHONMALLOC=mimalloc`` or a free-threaded build, CPython 3.13+:
    every Python object, small or not, comes from CPython's own mimalloc, which exports no
    collect function, so `trim` then reaches only raw allocations).
    `malloc`: the library whose ``malloc`` the process calls (``"glibc"``, ``"jemalloc"``, e.g.
    Debian's libjemalloc2 through ``LD_PRELOAD``, or ``"other"``); `malloc_version` its version
    when it says (glibc's ``gnu_get_libc_version``, jemalloc's ``mallctl("version")``);
    `library` the file it was found in. `trim` is what `reclaim()` calls: ``"malloc_trim"``,
    ``"jemalloc_purge"`` or ``"no hook"``.
    """

    small_objects: str = attrs.field(validator=_one_of(SMALL_OBJECT_ALLOCATORS))
    malloc: str = attrs.field(validator=_one_of(MALLOCS))
    trim: str = attrs.field(validator=_one_of(TRIMS))
    malloc_version: Optional[str] = None
    library: Optional[str] = None

    def describe(self) -> str:
        """One line for people, e.g. ``malloc over glibc 2.36 malloc; reclaim: malloc_trim(0)``.

        Under pymalloc and mimalloc it adds what the hook does not reach.
        """
        # jemalloc's version carries a git suffix: "5.3.0-0-g54eaed1d8b56..."
        version = f" {self.malloc_version.split('-')[0]}" if self.malloc_version else ""
        hook = {"malloc_trim": "malloc_trim(0)",
                "jemalloc_purge": "mallctl arena.<all>.purge"}.get(self.trim, NO_HOOK)
        line = f"{self.small_objects} over {self.malloc}{version} malloc; reclaim: {hook}"
        # What no hook reaches: pymalloc unmaps only empty arenas, by itself; CPython's
        # mimalloc (all Python objects, not only small ones) exports nothing to call.
        return line + {"pymalloc": "; small objects: empty arenas only",
                       "mimalloc": "; Python objects: no hook"}.get(self.small_objects, "")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the fields plus `describe()` as ``"summary"``."""
        return {"small_objects": self.small_objects, "malloc": self.malloc,
                "malloc_version": self.malloc_version, "library": self.library,
                "trim": self.trim, "summary": self.describe()}


class _DlInfo(ctypes.Structure):
    # Dl_info from <dlfcn.h>: which shared object holds an address.
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _library_of(function: Any) -> Optional[str]:
    """The file of the shared object defining `function` (a ctypes function), or None."""
    dladdr = _libc_function("dladdr")
    if dladdr is None or function is None:
        return None
    dladdr.restype = ctypes.c_int
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    info = _DlInfo()
    if not dladdr(ctypes.cast(function, ctypes.c_void_p), ctypes.byref(info)):
        return None
    return info.dli_fname.decode(errors="replace") if info.dli_fname else None


def _small_objects() -> str:
    """Who serves small Python objects; see `Allocator.small_objects`.

    Behaviour first: pymalloc and mimalloc count the blocks they hand out, so
    ``sys.getallocatedblocks()`` is 0 exactly when neither serves objects (``PYTHONMALLOC=malloc``
    or ``malloc_debug``, or a build without pymalloc). Between the two, mimalloc is chosen by
    ``PYTHONMALLOC=mimalloc[_debug]`` (read once at startup; an interpreter without mimalloc
    refuses to start with it, so seeing it here means it is in use, unless ``-E``/``-I`` made the
    interpreter ignore the environment) and is the only allocator of free-threaded builds.
    """
    if sys.getallocatedblocks() == 0:
        return "malloc"
    chosen = "" if sys.flags.ignore_environment else os.environ.get("PYTHONMALLOC", "")
    if chosen.startswith("mimalloc") or sysconfig.get_config_var("Py_GIL_DISABLED"):
        return "mimalloc"
    return "pymalloc"


def _mallctl_read(mallctl: Any, name: bytes, ctype: Any) -> Any:
    """Read one jemalloc control `name` as `ctype`; None when jemalloc refuses."""
    value = ctype()
    size = ctypes.c_size_t(ctypes.sizeof(value))
    if mallctl(name, ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
        return None
    return value.value


def _jemalloc_purge(mallctl: Any, version: Optional[str]) -> Callable[[], bool]:
    """A hook purging every jemalloc arena: ``arena.<MALLCTL_ARENAS_ALL>.purge``.

    jemalloc 5 names all arenas with index 4096; jemalloc 3-4 with ``arenas.narenas``.
    """
    major = int(version.split(".", 1)[0]) if version and version[:1].isdigit() else 5
    index: Optional[int] = _JEMALLOC_ARENAS_ALL
    if major < 5:
        index = _mallctl_read(mallctl, b"arenas.narenas", ctypes.c_uint)
    name = f"arena.{index}.purge".encode()

    def purge() -> bool:
        failed = mallctl(name, None, None, None, 0)
        if failed:
            log.warning("jemalloc %s failed: %s", name.decode(), os.strerror(failed))
        return not failed

    return purge


_mallctl: Any = None  # jemalloc's mallctl, once detected as this process's malloc


def _jemalloc_allocated() -> Optional[int]:
    """jemalloc's ``stats.allocated`` after an ``epoch`` refresh; None without stats."""
    epoch = ctypes.c_uint64(1)
    if _mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.sizeof(epoch)) != 0:
        return None
    allocated = _mallctl_read(_mallctl, b"stats.allocated", ctypes.c_size_t)
    return None if allocated is None else int(allocated)


def _glibc_trim() -> bool:
    _malloc_trim(0)
    return True


def _detect() -> tuple[Allocator, Optional[Callable[[], bool]]]:
    """The allocators of this process and the hook `reclaim()` calls (None: no hook)."""
    small = _small_objects()
    malloc_function = _libc_function("malloc")
    library = _library_of(malloc_function)
    mallctl = _libc_function("mallctl")
    # jemalloc serves malloc only when the object defining malloc is the one defining mallctl
    # (a jemalloc loaded later, without interposing, leaves malloc to the C library).
    if mallctl is not None and (library is None or _library_of(mallctl) == library):
        mallctl.restype = ctypes.c_int
        mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                            ctypes.c_void_p, ctypes.c_size_t]
        global _mallctl
        _mallctl = mallctl
        raw = _mallctl_read(mallctl, b"version", ctypes.c_char_p)
        version = raw.decode(errors="replace") if raw else None
        found = Allocator(small_objects=small, malloc="jemalloc", trim="jemalloc_purge",
                          malloc_version=version, library=library)
        return found, _jemalloc_purge(mallctl, version)
    libc_version = _libc_function("gnu_get_libc_version")
    in_libc = library is None or os.path.basename(library).startswith("libc.")
    if libc_version is not None and in_libc:
        libc_version.restype = ctypes.c_char_p
        libc_version.argtypes = []
        version = libc_version()
        trim = "malloc_trim" if _malloc_trim is not None else NO_HOOK
        found = Allocator(small_objects=small, malloc="glibc", trim=trim,
                          malloc_version=version.decode() if version else None, library=library)
        return found, _glibc_trim if _malloc_trim is not None else None
    return Allocator(small_objects=small, malloc="other", trim=NO_HOOK, library=library), None


_detection: Optional[tuple[Allocator, Optional[Callable[[], bool]]]] = None


def _detected() -> tuple[Allocator, Optional[Callable[[], bool]]]:
    global _detection
    if _detection is None:  # idempotent: two threads detecting at once find the same thing
        _detection = _detect()
    return _detection


def detect_allocator() -> Allocator:
    """Which allocators serve this process and which hook `reclaim()` uses (see `Allocator`).

    Detected once per process, by looking at the process itself: ``sys.getallocatedblocks()``
    and ``PYTHONMALLOC`` for small objects; for malloc, the shared object ``dladdr`` says
    defines the ``malloc`` this process calls, whether it also defines jemalloc's ``mallctl``,
    and glibc's ``gnu_get_libc_version``. Costs a few symbol look-ups.
    """
    return _detected()[0]


def heap_bytes() -> Optional[int]:
    """Bytes malloc holds for live allocations, from glibc ``mallinfo2()``; None elsewhere.

    The figure is ``uordblks + hblkhd``: bytes in use in malloc's arenas plus bytes in chunks
    malloc mmapped for large requests. That covers every object CPython allocates through
    malloc (objects over 512 bytes: the strings, bytes and buffers of job results, dict and
    list tables) and the memory of C extensions. It does not cover pymalloc's arenas of small
    objects (mmapped directly) nor memory malloc has freed but not returned (fragmentation);
    the gap between `heap` and RSS is where those show.

    Cost: well under a microsecond on a tidy heap, but glibc walks every free chunk of every
    arena, so a heavily fragmented heap (a hundred thousand free chunks) costs tens of
    milliseconds. Probes therefore refresh it at a bounded rate; call this for a fresh figure.
    None where mallinfo2 is missing: macOS, Windows, musl, glibc older than 2.33. Under jemalloc
    (glibc's mallinfo2 would describe glibc's unused heap) it is jemalloc's ``stats.allocated``,
    refreshed through ``mallctl("epoch")``: the same meaning, a few microseconds.
    """
    if _detected()[0].malloc == "jemalloc":
        return _jemalloc_allocated()
    if _mallinfo2 is None:
        return None
    info = _mallinfo2()
    return int(info.uordblks + info.hblkhd)


class _HeapGauge:
    """`heap_bytes()` at a bounded cost.

    A read that takes under a millisecond (the normal case: microseconds) leaves every sample
    fresh. After a slower one (t seconds, a heavily fragmented heap), the next fresh read waits
    t / 0.1% (a 25 ms read is refreshed at most every 25 s) and samples meanwhile repeat the
    last figure, so reading the heap never takes more than 0.1% of the time.
    """

    __slots__ = ("_last", "_next")

    def __init__(self) -> None:
        self._last: Optional[int] = None
        self._next = 0.0

    def __call__(self) -> Optional[int]:
        start = time.perf_counter()
        if start < self._next:
            return self._last
        value = heap_bytes()
        cost = time.perf_counter() - start
        self._last = value
        self._next = start + cost / _HEAP_DUTY if cost > _HEAP_SLOW else 0.0
        return value


# --------------------------------------------------------------------------------------------
# Process probe


class _PsutilSelf:
    """psutil's view of this process, re-created after fork (a psutil.Process keeps its pid)."""

    __slots__ = ("_pid", "_process")

    def __init__(self) -> None:
        self._pid = -1
        self._process: Optional[psutil.Process] = None

    def rss(self) -> int:
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

    `limit` is reported as given (None = unknown); it is not guessed. Use `detect_limit()` or
    `physical_memory()` for a default. `heap=False` leaves `MemorySample.heap` as None.
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


# --------------------------------------------------------------------------------------------
# cgroup probe


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


# --------------------------------------------------------------------------------------------
# Choosing a probe


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
        log.warning("memory scope auto: ignoring unreadable cgroup (%s); using the process", exc)
    return ProcessProbe(limit)


def detect_limit(cgroup_root: PathLike = DEFAULT_CGROUP_ROOT) -> int:
    """``limit = "auto"``: the cgroup's memory limit when one is set, else physical RAM."""
    try:
        probe = CgroupProbe(cgroup_root, heap=False)
    except ValueError:
        return physical_memory()
    try:
        limit = probe.read_limit()
    except ProbeError as exc:
        log.warning("limit auto: ignoring unreadable cgroup limit (%s); using physical RAM", exc)
        limit = None
    finally:
        probe.close()
    return physical_memory() if limit is None else limit


# --------------------------------------------------------------------------------------------
# On-demand figures and reclaim


@contextlib.contextmanager
def _asking(pid: Optional[int]) -> Iterator[None]:
    """psutil's errors about `pid` as the builtins callers expect: ProcessLookupError for a
    missing process, PermissionError when denied."""
    try:
        yield
    except psutil.NoSuchProcess:
        raise ProcessLookupError(f"no process with pid {pid}") from None
    except psutil.AccessDenied:
        raise PermissionError(f"not allowed to inspect pid {pid}") from None


def _process(pid: Optional[int]) -> psutil.Process:
    with _asking(pid):
        return psutil.Process(pid)


def read_rss(pid: Optional[int] = None) -> int:
    """RSS in bytes of `pid` (default: this process), through psutil.

    For other processes (``memguard health --pid``); a probe is cheaper for this one.
    Raises ProcessLookupError for a missing process and PermissionError when denied.
    """
    process = _process(pid)
    with _asking(pid):
        return int(process.memory_info().rss)


def process_facts(pid: int) -> ProcessFacts:
    """Name, owner and children of `pid`, for the CLI (``health --pid``, ``cleanup --pid``).

    Raises ProcessLookupError for a missing process and PermissionError when denied; the
    owner and children are None / empty when they cannot be read.
    """
    process = _process(pid)
    with _asking(pid):
        name = process.name()
    try:
        uid: Optional[int] = int(process.uids().real)
    except (psutil.Error, AttributeError):
        uid = None
    try:
        children = tuple(int(child.pid) for child in process.children())
    except psutil.Error:
        children = ()
    return ProcessFacts(pid=pid, name=name, uid=uid, children=children)


@attrs.frozen(slots=True)
class ProcessFacts:
    """What the CLI needs to know of another process besides its memory."""

    pid: int
    name: str
    uid: Optional[int]
    children: tuple[int, ...]


def machine_memory() -> tuple[int, int]:
    """(used, total) bytes of this machine's RAM; used = total minus what is available, so
    page cache the kernel can drop does not count."""
    memory = psutil.virtual_memory()
    return int(memory.total - memory.available), int(memory.total)


def detailed_usage(pid: Optional[int] = None) -> dict[str, int]:
    """psutil ``memory_full_info()`` of `pid` (default: this process) as a dict of bytes.

    Includes ``uss`` (memory freed if the process exited) and, on Linux, ``pss`` and ``swap``,
    plus ``pid``. It walks ``/proc/PID/smaps``: about a millisecond, so on demand only, never
    per sample. Raises ProcessLookupError / PermissionError like `read_rss`.
    """
    process = _process(pid)
    with _asking(pid):
        info = process.memory_full_info()
    out = {name: int(value) for name, value in info._asdict().items()}
    out["pid"] = process.pid
    return out


@attrs.frozen(slots=True)
class Reclaim:
    """What `reclaim()` did: objects `gc.collect()` found unreachable, whether the allocator's
    hook returned memory, which hook that was, and how long it all took (reporting only;
    policy never depends on it).

    `mechanism` is `Allocator.trim`: ``"malloc_trim"`` (glibc), ``"jemalloc_purge"``
    (jemalloc's ``arena.<all>.purge`` through ``mallctl``) or ``"no hook"``. `trimmed` is True
    only when that hook ran and reported success.
    """

    collected: int
    trimmed: bool
    seconds: float
    mechanism: str = NO_HOOK

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the fields."""
        return {"collected": self.collected, "trimmed": self.trimmed, "seconds": self.seconds,
                "mechanism": self.mechanism}


def reclaim(*, full: bool = True) -> Reclaim:
    """Give freed memory back to the system: ``gc.collect()``, then the allocator's own hook.

    With ``full=False`` only the youngest generation is collected: evicted results are freed
    by reference counting the moment they are released, and a full collection of a large heap
    holds the GIL for long (seconds under load) while the app keeps allocating. The emergency
    controller tries the quick way first and collects fully only when usage did not follow.

    The collection frees cycles still holding evicted results. Then the hook of the malloc this
    process runs on (`detect_allocator`): glibc's ``malloc_trim(0)`` returns free pages from
    every malloc arena to the kernel (``madvise(MADV_DONTNEED)``); without it, memory freed in
    the middle of an arena, or in one of the per-thread arenas a threaded server accumulates
    (up to 8 x cores, see MALLOC_ARENA_MAX), stays in RSS. Under jemalloc (``LD_PRELOAD``),
    ``mallctl("arena.<all>.purge")`` returns every arena's unused dirty pages at once instead
    of after its decay time. Elsewhere (musl, macOS, another malloc) there is no hook:
    `mechanism` says ``"no hook"`` and `trimmed` is False. Python's pymalloc has no hook of its
    own: it unmaps a 1 MiB arena only once every object in it is free (docs/memory.md).
    The GIL is released during the hook.
    """
    start = time.perf_counter()
    collected = gc.collect() if full else gc.collect(0)
    allocator, hook = _detected()
    trimmed = hook() if hook is not None else False
    return Reclaim(collected=collected, trimmed=trimmed, seconds=time.perf_counter() - start,
                   mechanism=allocator.trim)
