"""On-demand figures (USS, PSS) and giving memory back to the OS."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil  # type: ignore[import-untyped, unused-ignore]  # stubs: types-psutil

import contextlib
import gc
import time
from collections.abc import Iterator
from typing import Any, Optional

import attrs

from memguard.memory.allocators import NO_HOOK, _detected


@contextlib.contextmanager
def _asking(pid: Optional[int]) -> Iterator[None]:
    """psutil's errors about `pid` as the builtins callers expect: ProcessLookupError for a
    missing process, PermissionError when denied."""
    import psutil  # type: ignore[import-untyped, unused-ignore]
    try:
        yield
    except psutil.NoSuchProcess:
        raise ProcessLookupError(f"no process with pid {pid}") from None
    except psutil.AccessDenied:
        raise PermissionError(f"not allowed to inspect pid {pid}") from None


def _process(pid: Optional[int]) -> psutil.Process:
    import psutil  # type: ignore[import-untyped, unused-ignore]
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
    import psutil  # type: ignore[import-untyped, unused-ignore]
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
    import psutil  # type: ignore[import-untyped, unused-ignore]
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
