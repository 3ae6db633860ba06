"""Machine facts (physical RAM, page size) and the heap figure."""

from __future__ import annotations

import ctypes
from typing import Any, Final, Optional

# Reading the heap figure may cost milliseconds on a fragmented glibc heap (mallinfo2 walks every
# free chunk). Once a read costs more than _HEAP_SLOW, probes refresh it at most as often as
# keeps that cost under _HEAP_DUTY of the time; cheaper reads are always fresh.
_HEAP_SLOW: Final = 0.001
_HEAP_DUTY: Final = 0.001



_physical: Optional[int] = None


def physical_memory() -> int:
    """Total physical RAM of the machine in bytes (psutil ``virtual_memory().total``)."""
    import psutil  # type: ignore[import-untyped, unused-ignore]
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
