"""Trace recording: what a manager's stores did, without keys or contents, for `memguard tune`.

Opt-in: ``recorder = manager.record("traffic.trace")`` (and ``recorder.close()``, or use it
as a context manager). The recorder listens to what the stores already report, so the
default path is unchanged and the read path stays one dict write:

- writes (inserts, rewrites, a job stored again with its result) from the store's index, at
  the write, with the job's weighed size when it is finished;
- finishes seen without a write (a job finished in place is seen at the next re-check);
- reads, when the index drains its read set (at inserts and passes): a read is dated at the
  drain that took it, not when it happened, and several reads of one job between two drains
  are one read. Only reads of stored jobs are seen: a read that finds nothing never reaches
  a store, so an application that wants the tuner to count results clients came back for
  and did not find calls ``recorder.missed(store_name, key)`` where it answers "not found"
  (``memguard stress --record`` does);
- removals (the application deleted the job, or it was evicted) from the index, and
  evictions with their cause from ``on_evict``.

Keys are written as keyed BLAKE2b hashes (8 bytes, hex) under a random salt drawn per trace
and never written: one job keeps one hash through a trace, and nobody can recover or
confirm a key from the file. Times are the manager's clock in seconds since the recording
started. The format is JSON lines: a header object, then one array per event::

    {"memguard_trace": 1, "clock": "monotonic", "base": 31457280, "limit": 536870912, ...}
    ["s", 0, "diagram"]                 a store (its index in later records, its name)
    ["i", 12.5, 0, "9f..", null]        insert: time, store, key hash, size (null: active)
    ["w", 40.1, 0, "9f..", 524288]      write of a stored job (a touch; size null: active)
    ["f", 41.0, 0, "9f..", 524288]      seen finished without a write, with its size
    ["r", 44.0, 0, "9f.."]              read (dated at the drain that took it)
    ["m", 700.2, 0, "9f.."]             a read that found nothing (reported by the app)
    ["d", 900.0, 0, "9f.."]             removed (deleted, or evicted: then an "e" follows)
    ["e", 900.0, 0, "9f..", "age", 524288]  evicted: cause, size

`base` is the process's memory use minus what its stores held when the recording started
(null without a probe): the tuner adds it to the stores' bytes to model usage.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Callable, Optional, Protocol, Union

from memguard._logging import logger
from memguard.eviction.events import EvictionEvent
from memguard.index.job_index import JobIndex, Key
from memguard.policy.policy import Policy

#: The format version written in the header; `memguard tune` refuses others.
TRACE_VERSION = 1
#: Bytes of each key hash (16 hex digits): collisions are negligible below billions of jobs.
HASH_BYTES = 8


class _StoreObserver:
    """The `IndexObserver` of one store: turns index callbacks into trace records."""

    __slots__ = ("number", "recorder")

    def __init__(self, recorder: Recorder, number: int) -> None:
        self.recorder = recorder
        self.number = number

    def stored(self, key: Key, new: bool, size: Optional[int]) -> None:
        self.recorder.write("i" if new else "w", self.number, key, size)

    def finished(self, key: Key, size: int) -> None:
        self.recorder.write("f", self.number, key, size)

    def read(self, keys: list[Key]) -> None:
        for key in keys:
            self.recorder.write("r", self.number, key)

    def removed(self, key: Key) -> None:
        self.recorder.write("d", self.number, key)



class RecordedHost(Protocol):
    """What a `Recorder` needs of the manager whose stores it records."""

    clock: Callable[[], float]
    probe: Optional[Callable[[], Any]]

    @property
    def policy(self) -> Policy: ...

    def handles(self) -> Sequence[Any]: ...

    def on_evict(self, callback: Callable[[EvictionEvent], object]) -> Any: ...

    def remove_evict_callback(self, callback: Callable[[EvictionEvent], object]) -> None: ...

    def stop_recording(self, recorder: Recorder) -> None: ...


class Recorder:
    """Writes the trace of one manager's stores to `path` until `close()`.

    Made by `MemoryManager.record`. Writes are serialized by the recorder's own lock, taken
    inside store locks (never the other way round). A failure to write is logged once and
    stops the recording; it never reaches the application.
    """

    def __init__(self, manager: RecordedHost, path: Union[str, Path],
                 *, salt: Optional[bytes] = None) -> None:
        self.manager = manager
        self.path = Path(path)
        self._salt = salt if salt is not None else os.urandom(16)
        # hashlib loads OpenSSL (about 3.5 MB of RSS): imported by a recording, not by
        # `import memguard`; bound here so `hash` pays no import at each record.
        import hashlib
        import json  # likewise: `import memguard.manager` loads this module

        self._blake2b = hashlib.blake2b
        self._dumps = json.dumps
        self._lock = threading.Lock()
        self._file: Optional[IO[str]] = self.path.open("w", encoding="utf-8")
        self._stores: dict[str, int] = {}
        self._indexes: list[JobIndex] = []
        self._t0 = manager.clock()
        self.records = 0
        self._header()
        manager.on_evict(self._evicted)
        _recorders.add(self)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._file is None

    # -- what the manager and the application call -----------------------------------------------

    def attach(self, store_handle: Any) -> None:
        """Listen to one store (a `StoreHandle`; stores without an in-process index, such as
        Redis ones, are not recorded). Its current jobs are written as inserts."""
        index = getattr(store_handle, "index", None)
        if not isinstance(index, JobIndex) or self.closed:
            return
        with index.lock:
            number = self._store_number(str(store_handle.name))
            index.drain_reads()
            for key in list(index.created):
                size = None if key in index.unweighed else index.size_of(key)
                self.write("i", number, key, size)
            index.observer = _StoreObserver(self, number)
            self._indexes.append(index)

    def missed(self, store: str, key: Key) -> None:
        """Record a read of `key` in store `store` that found nothing (evicted, or never
        there): call it where the application answers "not found", so the tuner can count
        results clients came back for and lost."""
        self.write("m", self._store_number(store), key)

    def close(self) -> None:
        """Stop listening and close the file (idempotent)."""
        self.manager.remove_evict_callback(self._evicted)
        self.manager.stop_recording(self)
        for index in self._indexes:
            with index.lock:
                if isinstance(index.observer, _StoreObserver) and index.observer.recorder is self:
                    index.observer = None
        self._indexes.clear()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    # -- records -------------------------------------------------------------------------------

    def hash(self, key: Key) -> str:
        """The key's hash in this trace: keyed BLAKE2b of its repr under the trace's salt."""
        return self._blake2b(repr(key).encode("utf-8", "backslashreplace"),
                               key=self._salt, digest_size=HASH_BYTES).hexdigest()

    def write(self, kind: str, store: int, key: Key, *extra: Any) -> None:
        """Append one record, dated now on the manager's clock. Called inside store writes:
        whatever goes wrong (a key whose repr raises, a full disk) stops the recording with
        one error logged and never reaches the application."""
        if self._file is None:
            return
        try:
            record = [kind, round(self.manager.clock() - self._t0, 3), store, self.hash(key),
                      *extra]
        except Exception as error:
            with self._lock:
                self._stop(error)
            return
        self._emit(record)

    def _emit(self, record: Any) -> None:
        with self._lock:
            self._emit_locked(record)

    def _emit_locked(self, record: Any) -> None:
        if self._file is None:
            return
        try:
            self._file.write(self._dumps(record, separators=(",", ":")) + "\n")
        except Exception as error:
            self._stop(error)
            return
        self.records += 1

    def _stop(self, error: Exception) -> None:
        """Stop recording after `error` (lock held)."""
        logger.error("memguard: trace recording to %s stopped: %s: %s", self.path,
                     type(error).__name__, error)
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(Exception):
                file.close()

    def _store_number(self, name: str) -> int:
        with self._lock:  # declared before any record can use the number
            number = self._stores.get(name)
            if number is None:
                number = self._stores[name] = len(self._stores)
                self._emit_locked(["s", number, name])
            return number

    def _evicted(self, event: EvictionEvent) -> None:
        if self._file is not None:
            self.write("e", self._store_number(event.store), event.key, event.cause.value,
                       event.size)

    def _header(self) -> None:
        manager = self.manager
        indexes = [getattr(h, "index", None) for h in manager.handles()]
        held = sum(index.total_bytes for index in indexes if isinstance(index, JobIndex))
        base: Optional[int] = None
        if manager.probe is not None:
            try:
                base = max(0, manager.probe().usage - held)
            except Exception as error:  # a probe that fails leaves the base unknown
                logger.warning("memguard: trace: the probe failed (%s); no base usage", error)
        memory = manager.policy.memory
        header = {
            "memguard_trace": TRACE_VERSION,
            "clock": getattr(manager.clock, "__name__", type(manager.clock).__name__),
            "base": base,
            "limit": memory.limit if isinstance(memory.limit, int) else None,
            "check_interval": memory.check_interval,
            "policy": manager.policy.source,
        }
        self._emit(header)


_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child does not write its parent's trace: its copy of the file (and of its
    unwritten buffer) would interleave with the parent's records. Its copy of the file
    descriptor is pointed at /dev/null, so nothing the child flushes lands anywhere, and the
    recorder's lock is new (the thread holding it at the fork does not exist here)."""
    for recorder in list(_recorders):
        recorder._lock = threading.Lock()
        file, recorder._file = recorder._file, None
        if file is None:
            continue
        _abandoned.append(file)  # never closed here: a close would flush the parent's buffer
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, file.fileno())
            os.close(null)
        logger.info("memguard: trace recording to %s stays with the parent process; this "
                    "forked process (pid %d) does not record", recorder.path, os.getpid())


#: Trace files a forked child inherited, kept (their descriptors point at /dev/null).
_abandoned: list[IO[str]] = []

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
