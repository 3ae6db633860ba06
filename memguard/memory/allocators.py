"""Which allocators serve this process, and their hooks (trim, arena figures)."""

from __future__ import annotations

import ctypes
import os
import sys
import time
from typing import Any, Callable, Final, Optional

import attrs

from memguard._logging import logger
from memguard.memory.heap import _HEAP_DUTY, _HEAP_SLOW, _libc_function, _mallinfo2, _malloc_trim

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
    if chosen.startswith("mimalloc") or _free_threaded():
        return "mimalloc"
    return "pymalloc"


def _free_threaded() -> bool:
    """Whether this is a free-threaded build (``Py_GIL_DISABLED``): the ABI flag ``t`` says so
    on POSIX; elsewhere sysconfig does (imported only there: with its data module it is about
    0.2 MB a process would otherwise keep for one flag)."""
    abiflags = getattr(sys, "abiflags", None)
    if abiflags is not None:
        return "t" in abiflags
    import sysconfig
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


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
            logger.warning("jemalloc %s failed: %s", name.decode(), os.strerror(failed))
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
