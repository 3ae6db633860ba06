"""Case 1, access: reading a job from a managed store vs a dict and the caches users compare with.

Every contender holds the same jobs under the same string keys; one timed loop reads eight
different keys (spread over the store, so an LRU really moves them), and the figure is the
time per read. The `@touches` accessor is compared with the same method body left
undecorated on the same managed instance, so the difference is the decorator alone.
"""

from __future__ import annotations

from typing import Any, Optional

import cachetools

from benchmarks import (
    Settings,
    TimeFunc,
    Timing,
    case,
    compare,
    difference,
    ratio,
    target,
    timeit_func,
    timing_row,
)
from memguard import MemoryManager, managed_store, touches

cachebox: Any
try:  # optional peer (the `bench` extra installs it)
    import cachebox
except ImportError:  # pragma: no cover - depends on the environment
    cachebox = None

UNROLL = 8
TTL_SECONDS = 20 * 60


def make_jobs(n: int) -> dict[str, dict[str, Any]]:
    """`n` finished jobs keyed like job ids, each holding a short result."""
    result = "x" * 200
    return {f"job-{i:08d}": {"status": "done", "result": result} for i in range(n)}


def build(n_jobs: int) -> dict[str, Any]:
    """Every contender, filled with the same `n_jobs` jobs, plus the keys to read."""
    manager = MemoryManager()  # private: the suite never touches the process-wide manager
    jobs = make_jobs(n_jobs)

    @managed_store(max_age="20m", max_jobs=n_jobs * 2, name="bench_access", manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        """A managed dict store, as in DESIGN section 2."""

    @managed_store(name="bench_accessor", mapping="jobs", manager=manager)
    class JobService:
        """A store holding its jobs in a dict attribute, read through an accessor."""

        def __init__(self) -> None:
            self.jobs: dict[str, Any] = {}

        @touches
        def get_job(self, job_id: str) -> Any:
            return self.jobs.get(job_id)

        def get_job_bare(self, job_id: str) -> Any:
            return self.jobs.get(job_id)

    class Plain(dict):  # type: ignore[type-arg]
        """A dict subclass whose __getitem__ is Python code doing nothing else: the floor."""

        def __getitem__(self, key: str) -> Any:
            return dict.__getitem__(self, key)

    store = Jobs(jobs)
    service = JobService()
    service.jobs.update(jobs)
    lru: cachetools.LRUCache[str, Any] = cachetools.LRUCache(maxsize=n_jobs * 2)
    ttl: cachetools.TTLCache[str, Any] = cachetools.TTLCache(maxsize=n_jobs * 2, ttl=TTL_SECONDS)
    lru.update(jobs)
    ttl.update(jobs)
    contenders: dict[str, Any] = {
        "dict": dict(jobs), "plain": Plain(jobs), "store": store, "service": service,
        "lru": lru, "ttl": ttl,
    }
    if cachebox is not None:
        cb_lru: Any = cachebox.LRUCache(n_jobs * 2)
        cb_ttl: Any = cachebox.TTLCache(n_jobs * 2, TTL_SECONDS)
        cb_lru.update(jobs)
        cb_ttl.update(jobs)
        contenders.update(cb_lru=cb_lru, cb_ttl=cb_ttl)
    keys = list(jobs)
    step = max(1, len(keys) // UNROLL)
    contenders["keys"] = keys[::step][:UNROLL]
    contenders["manager"] = manager
    return contenders


def _reads(expr: str, obj: Any, keys: list[str]) -> TimeFunc:
    """Time `UNROLL` reads per loop: `expr` with `s` the object and `KEY` each key in turn."""
    namespace: dict[str, Any] = {"s": obj}
    lines = []
    for i, key in enumerate(keys):
        namespace[f"k{i}"] = key
        lines.append(expr.replace("KEY", f"k{i}"))
    return timeit_func("\n".join(lines), namespace)


def time_functions(built: dict[str, Any]) -> dict[str, TimeFunc]:
    """The contenders' time functions, by display name."""
    keys = built["keys"]
    funcs = {
        "dict[k]": _reads("s[KEY]", built["dict"], keys),
        "dict subclass[k] (Python __getitem__)": _reads("s[KEY]", built["plain"], keys),
        "managed store[k]": _reads("s[KEY]", built["store"], keys),
        "managed store.get(k)": _reads("s.get(KEY)", built["store"], keys),
        "@touches accessor": _reads("s.get_job(KEY)", built["service"], keys),
        "same accessor, undecorated": _reads("s.get_job_bare(KEY)", built["service"],
                                             keys),
        "cachetools LRUCache[k]": _reads("s[KEY]", built["lru"], keys),
        "cachetools LRUCache.get(k)": _reads("s.get(KEY)", built["lru"], keys),
        "cachetools TTLCache[k]": _reads("s[KEY]", built["ttl"], keys),
        "cachetools TTLCache.get(k)": _reads("s.get(KEY)", built["ttl"], keys),
    }
    if "cb_lru" in built:
        funcs["cachebox LRUCache[k]"] = _reads("s[KEY]", built["cb_lru"], keys)
        funcs["cachebox TTLCache[k]"] = _reads("s[KEY]", built["cb_ttl"], keys)
    return funcs


def run(quick: bool, *, settings: Optional[Settings] = None,
        n_jobs: Optional[int] = None) -> dict[str, Any]:
    """Measure case 1 and state its targets."""
    settings = settings or Settings.for_mode(quick)
    n_jobs = n_jobs or 10_000
    built = build(n_jobs)
    funcs = time_functions(built)
    t = compare(funcs, settings, group="access", inner=dict.fromkeys(funcs, UNROLL))
    plain, lru, ttl = t["dict[k]"], t["cachetools LRUCache[k]"], t["cachetools TTLCache[k]"]
    cb: list[Timing] = [t[name] for name in ("cachebox LRUCache[k]", "cachebox TTLCache[k]")
                        if name in t]
    store, get = t["managed store[k]"], t["managed store.get(k)"]
    touched, bare = t["@touches accessor"], t["same accessor, undecorated"]
    overhead = difference(touched, bare)
    rows = [
        timing_row(plain),
        timing_row(t["dict subclass[k] (Python __getitem__)"], [plain],
                   note="floor for any Python-level hook"),
        timing_row(store, [lru, ttl, plain, *cb]),
        timing_row(get, [t["cachetools LRUCache.get(k)"], t["cachetools TTLCache.get(k)"],
                         plain]),
        timing_row(touched, [bare], note=f"adds {overhead * 1e9:.0f} ns over the bare method"),
        timing_row(bare, [plain]),
        timing_row(lru, [plain]),
        timing_row(t["cachetools LRUCache.get(k)"], [plain]),
        timing_row(ttl, [plain]),
        timing_row(t["cachetools TTLCache.get(k)"], [plain]),
        *(timing_row(timing, [plain]) for timing in cb),
    ]
    targets = [
        target("store[k] vs cachetools LRUCache[k]", ratio(store, lru), "<=", 1.0, "x",
               detail=f"{store.best * 1e9:.0f} ns vs {lru.best * 1e9:.0f} ns"),
        target("store[k] vs cachetools TTLCache[k]", ratio(store, ttl), "<=", 0.45, "x",
               detail=f"{store.best * 1e9:.0f} ns vs {ttl.best * 1e9:.0f} ns"),
        target("@touches accessor overhead over the bare method", overhead * 1e9, "<=", 400,
               "ns", detail=f"{touched.best * 1e9:.0f} ns vs {bare.best * 1e9:.0f} ns"),
    ]
    notes = [f"{n_jobs} jobs per contender; {UNROLL} different keys read per timed loop."]
    if cachebox is None:
        notes.append("cachebox is not installed: its rows are left out.")
    return case("access", "1. access: read one job (per read)", rows=rows, targets=targets,
                notes=notes, params={"jobs": n_jobs, "unroll": UNROLL})
