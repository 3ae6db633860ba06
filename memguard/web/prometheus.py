"""Prometheus exposition for servers with one process or several (gunicorn or uvicorn workers).

A scrape of a multi-worker server reaches one worker, and each worker counts on its own, so
the plain exposition of one process's counters makes ``rate()`` see a reset every time the
scrape lands on another worker. Two modes avoid that:

- **Per-process series** (the default): every sample carries a ``pid`` label naming the
  process that answered. Each series is one worker's own and never goes down while that
  worker lives; aggregate in queries (``sum by (store, cause) (rate(...))``). A scrape shows
  only the worker that answered; the others' series go stale until a scrape reaches them.
- **prometheus-client's multiprocess mode**, when ``PROMETHEUS_MULTIPROC_DIR`` names a
  directory (set before the server starts, empty at start), and under gunicorn or
  ``uvicorn --workers N`` with more than one worker even when it is not set: memguard then
  manages a run directory of its own (`run_directory`, one per gunicorn arbiter or uvicorn
  supervisor), so any scrape shows every worker. Under gunicorn the hooks make it before or
  as the workers fork and remove it when the arbiter exits; under uvicorn each worker finds
  it from its supervisor's pid (`uvicorn_supervisor`) when the app builds its endpoints, and
  since the supervisor runs no memguard code, a directory whose owner is gone is removed by
  the next one made (`remove_stale_directories`). Each process mirrors
  its figures into its own files there (at start, at each scrape it answers and every
  `SYNC_INTERVAL` seconds), and the answering worker aggregates every process's files with a
  ``MultiProcessCollector``:
  counters are summed over all workers, dead ones included, so totals never go down; gauges
  carry a ``pid`` label (mode ``liveall``: the gunicorn ``child_exit`` hook in
  `memguard.integrations.gunicorn` drops a dead worker's gauges through
  ``prometheus_client.multiprocess.mark_process_dead``; under uvicorn, which has no such
  hook, each worker's mirroring drops the gauges of workers that are gone).

Both modes also export the standard ``process_*`` and ``python_gc_*`` families (and
``python_info``) of the answering process, labelled with its ``pid``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Final, Optional

from memguard._logging import logger

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
SYNC_INTERVAL: Final = 5.0
"""Seconds between two mirrorings of a process's figures into its multiprocess files."""


RUN_PREFIX: Final = "memguard-prometheus-"


def run_directory(arbiter: int) -> str:
    """The multiprocess directory memguard manages for the gunicorn arbiter or uvicorn
    supervisor of pid `arbiter` when ``PROMETHEUS_MULTIPROC_DIR`` is not set: in the temporary
    directory, named by the arbiter's pid and start time (a later process reusing the pid gets
    another one), so the arbiter (``pre_fork``, ``child_exit``, ``on_exit``) and each worker
    (``post_fork``, or `serve_every_worker` under uvicorn) find the same path without passing
    it around."""
    import tempfile

    import psutil  # type: ignore[import-untyped, unused-ignore]

    try:
        started = int(psutil.Process(arbiter).create_time() * 1000)
    except psutil.Error:
        started = 0
    return os.path.join(tempfile.gettempdir(), f"{RUN_PREFIX}{arbiter}-{started}")


def uvicorn_supervisor() -> Optional[int]:
    """The pid of the ``uvicorn --workers N`` supervisor (N >= 2) this process is a worker of,
    or None.

    uvicorn starts each worker with multiprocessing's spawn, as a process whose target is
    ``uvicorn._subprocess.subprocess_started`` with the server's ``config`` among its
    arguments; the worker holds that process object as ``multiprocessing.current_process()``.
    It is a worker of the multiprocess supervisor when that config asks for two or more
    workers and no reloading (``--reload`` runs one worker under another supervisor), and
    the supervisor is still its parent. Anything else (a plain ``uvicorn``, gunicorn's
    uvicorn worker class, a pool of the app's own) is None. Costs no import: a process
    uvicorn spawned has multiprocessing loaded already.
    """
    multiprocessing: Any = sys.modules.get("multiprocessing")
    if multiprocessing is None:
        return None
    process = multiprocessing.current_process()
    target = getattr(process, "_target", None)
    kwargs = getattr(process, "_kwargs", None)
    if getattr(target, "__module__", None) != "uvicorn._subprocess" or not isinstance(kwargs,
                                                                                    dict):
        return None
    config = kwargs.get("config")
    workers = getattr(config, "workers", None)
    if not isinstance(workers, int) or workers < 2 or getattr(config, "should_reload", True):
        return None
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid != os.getppid():
        return None
    return int(parent.pid)


def remove_stale_directories() -> list[str]:
    """Remove the run directories (`run_directory`) of this user whose arbiter or supervisor
    is gone (no process with that pid and start time), and return their paths. A gunicorn
    arbiter removes its own on exit; a uvicorn supervisor runs no memguard code, and an
    arbiter killed with SIGKILL has no exit, so these are removed when the next run
    directory is made."""
    import shutil
    import tempfile

    import psutil  # type: ignore[import-untyped, unused-ignore]

    removed: list[str] = []
    root = tempfile.gettempdir()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        owner, _, started = entry.name[len(RUN_PREFIX):].partition("-")
        if not (entry.name.startswith(RUN_PREFIX) and owner.isdigit() and started.isdigit()):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != os.getuid():
                continue
            alive = int(psutil.Process(int(owner)).create_time() * 1000) == int(started)
        except psutil.Error:
            alive = False
        except OSError:
            continue
        if not alive:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def serve_every_worker(snapshot: Snapshot) -> Optional[str]:
    """Under ``uvicorn --workers N`` without ``PROMETHEUS_MULTIPROC_DIR``: make this worker
    write its figures to the run directory of its supervisor, start mirroring them there at
    once (so a scrape any sibling answers shows this worker from now on), and return the
    directory; anywhere else, do nothing and return None. `memguard.web`'s endpoints call
    this when an app builds them, in each worker. Stale run directories are removed first."""
    if os.environ.get(MULTIPROC_ENV):
        return None
    supervisor = uvicorn_supervisor()
    if supervisor is None:
        return None
    path = run_directory(supervisor)
    if not os.path.isdir(path):
        for stale in remove_stale_directories():
            logger.debug("memguard: removed the stale metrics directory %s", stale)
    use_directory(path)
    global _prune_dead
    _prune_dead = True
    logger.debug("memguard: uvicorn worker %s writes metrics to %s (supervisor %s)",
                 os.getpid(), path, supervisor)
    ensure_sync(snapshot)
    return path


def use_directory(path: str) -> None:
    """Make `path` (created, private to this user) this process's ``PROMETHEUS_MULTIPROC_DIR``,
    before any metric value is written: prometheus-client picks its value class when it is
    first imported, so a client imported earlier (an app preloaded in the arbiter) is
    switched over here."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.environ[MULTIPROC_ENV] = path
    import sys

    values: Any = sys.modules.get("prometheus_client.values")
    if values is not None:
        values.ValueClass = values.get_value_class()


def multiprocess_mode() -> bool:
    """True when prometheus-client writes metric values to ``PROMETHEUS_MULTIPROC_DIR``.

    prometheus-client decides once, when it is first imported; a variable set later is
    reported (once) and ignored, since the values of this process would not reach the files.
    """
    if not os.environ.get(MULTIPROC_ENV):
        return False
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        _warn_once(f"memguard: {MULTIPROC_ENV} was set after prometheus_client was imported; "
                   "this process's metrics stay in memory (per-process series)")
        return False
    return True


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


Snapshot = Callable[[], Any]
"""Returns a fresh collector (``.collect()`` yields families) over this process's figures;
`memguard.web` supplies it, so this module never imports the web layer."""


def exposition(snapshot: Snapshot, accept: Optional[str]) -> tuple[bytes, str]:
    """(body, content type) for a scrape answered by this process."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    pid = str(os.getpid())
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_mode():
        from prometheus_client.multiprocess import MultiProcessCollector

        _mirror(snapshot().collect())
        _ensure_thread(snapshot)
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_WithPid(snapshot(), pid))
    registry.register(_WithPid(_standard_collectors(), pid))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class _Collectors:
    """The standard process, gc and platform collectors of this process, unregistered."""

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            GCCollector,
            PlatformCollector,
            ProcessCollector,
        )

        scratch = CollectorRegistry()  # they insist on registering somewhere: not globally
        self.parts = [ProcessCollector(registry=scratch), GCCollector(registry=scratch),
                      PlatformCollector(registry=scratch)]

    def collect(self) -> Iterator[Any]:
        for part in self.parts:
            yield from part.collect()


_standard: Optional[_Collectors] = None


def _standard_collectors() -> _Collectors:
    global _standard
    if _standard is None:
        _standard = _Collectors()
    return _standard


class _WithPid:
    """Re-yields another collector's families with a ``pid`` label on every sample."""

    def __init__(self, inner: Any, pid: str) -> None:
        self.inner, self.pid = inner, pid

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import Metric

        for family in self.inner.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                labelled.add_sample(sample.name, {**sample.labels, "pid": self.pid},
                                    sample.value, sample.timestamp, sample.exemplar)
            yield labelled


# whose values live in this process's files in PROMETHEUS_MULTIPROC_DIR.

_mirror_lock = threading.Lock()
_metrics: dict[str, Any] = {}
_last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
_last_pid: Optional[int] = None


def sync(snapshot: Snapshot) -> None:
    """Mirror this process's figures into its multiprocess files (no-op otherwise)."""
    if multiprocess_mode():
        _mirror(snapshot().collect())
        if _prune_dead:
            drop_dead_workers(os.environ[MULTIPROC_ENV])


_prune_dead = False
"""Set in a uvicorn worker using a managed run directory: nothing else drops the gauges of a
worker the supervisor replaced (gunicorn's ``child_exit`` hook does it there)."""


def drop_dead_workers(path: str) -> None:
    """Remove the live gauges' files (``gauge_live*_<pid>.db``, what prometheus-client's
    ``mark_process_dead`` removes) in `path` of every process that is gone.

    Every worker does this at each mirroring, so two may find the same dead worker's file
    and one removes it first: a file already gone is no error (``mark_process_dead`` lists
    the files and removes them, and would raise then)."""
    import psutil  # type: ignore[import-untyped, unused-ignore]

    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        if name.startswith("gauge_live") and name.endswith(".db"):
            pid = name[:-3].rpartition("_")[2]
            if pid.isdigit() and not psutil.pid_exists(int(pid)):
                try:
                    os.remove(os.path.join(path, name))
                except FileNotFoundError:  # a sibling removed it first
                    pass


def _mirror(families: Iterable[Any]) -> None:
    """Counters grow by what this process's snapshot grew since the last mirroring (a drop,
    such as a store that was garbage-collected, counts as a reset: never a decrease);
    gauges are set."""
    from prometheus_client import Counter, Gauge

    global _last_pid
    with _mirror_lock:
        if _last_pid != os.getpid():  # a forked child: its files start at zero
            _last.clear()
            _last_pid = os.getpid()
        for family in families:
            if not family.samples:  # its label names are known only from samples
                continue
            labelnames = sorted({k for s in family.samples for k in s.labels})
            metric = _metrics.get(family.name)
            if metric is None:
                if family.type == "counter":
                    metric = Counter(family.name, family.documentation, labelnames,
                                     registry=None)
                else:
                    metric = Gauge(family.name, family.documentation, labelnames,
                                   registry=None, multiprocess_mode="liveall")
                _metrics[family.name] = metric
            for sample in family.samples:
                if family.type == "counter" and not sample.name.endswith("_total"):
                    continue  # _created samples: the counter keeps its own
                child: Any = metric.labels(**sample.labels) if labelnames else metric
                if family.type == "counter":
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    last = _last.get(key, 0.0)
                    _last[key] = sample.value
                    child.inc(sample.value - last if sample.value >= last else sample.value)
                else:
                    child.set(sample.value)


_thread: Optional[threading.Thread] = None
_thread_pid: Optional[int] = None


def ensure_sync(snapshot: Snapshot) -> None:
    """In multiprocess mode, keep this process's figures mirrored every `SYNC_INTERVAL`
    (the gunicorn ``post_fork`` hook calls this in each worker)."""
    if multiprocess_mode():
        _ensure_thread(snapshot)


def _ensure_thread(snapshot: Snapshot) -> None:
    """Start this process's mirroring thread unless it runs (a fork leaves none behind)."""
    global _thread, _thread_pid
    with _mirror_lock:
        if _thread is not None and _thread_pid == os.getpid() and _thread.is_alive():
            return
        _thread_pid = os.getpid()
        _thread = threading.Thread(target=_run, args=(snapshot,), daemon=True,
                                   name="memguard-metrics")
        _thread.start()


def _run(snapshot: Snapshot) -> None:
    stop = threading.Event()
    while True:  # at once (a scrape answered by a sibling shows this worker), then every
        try:     # SYNC_INTERVAL; a daemon thread: ends with the process
            sync(snapshot)
        except Exception:  # never die silently: say why, and keep mirroring
            logger.exception("memguard: mirroring metrics to %s failed", MULTIPROC_ENV)
        if stop.wait(SYNC_INTERVAL):
            return


def _after_fork_in_child() -> None:
    """A lock held by another thread at the fork would stay held forever in the child."""
    global _mirror_lock
    _mirror_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
