"""Case 1, access: reading a job from a managed store vs a dict and the caches users compare with.

Every contender holds the same jobs under the same string keys; one timed loop reads eight
different keys (spread over the store, so an LRU really moves them), and the figure is the
time per read. Each `@touches` accessor is compared with the same method body left
undecorated on the same managed instance, so the difference is the decorator alone: one
accessor whose body is the plain read of DESIGN section 2 (`return self.jobs.get(job_id)`,
which the store keeps undecorated since that read touches), and one with any other body
(which keeps the generated wrapper). Touches are counted, not timed: the `pop` calls on the
store's read set during one accessor call (each touch pops once, then inserts).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

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
from memguard import MemoryManager, handle, managed_store, touches

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

        @touches
        def get_status(self, job_id: str) -> Any:
            job = self.jobs.get(job_id)
            return job and job["status"]

        def get_status_bare(self, job_id: str) -> Any:
            job = self.jobs.get(job_id)
            return job and job["status"]

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
        "mapping= store.jobs[k]": _reads("s.jobs[KEY]", built["service"], keys),
        "mapping= store.jobs.get(k)": _reads("s.jobs.get(KEY)", built["service"], keys),
        "@touches accessor": _reads("s.get_job(KEY)", built["service"], keys),
        "same accessor, undecorated": _reads("s.get_job_bare(KEY)", built["service"],
                                             keys),
        "@touches accessor, other body": _reads("s.get_status(KEY)", built["service"], keys),
        "same other body, undecorated": _reads("s.get_status_bare(KEY)", built["service"],
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


def touches_per_call(service: Any, call: Callable[[], Any]) -> int:
    """How many touches one call makes: the `pop` calls on the store's read set (a touch
    pops the key, then inserts it at the recent end), seen by a profile function."""
    reads = handle(service).index.reads
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event == "c_call" and getattr(arg, "__self__", None) is reads and (
                getattr(arg, "__name__", "") == "pop"):
            count += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(previous)
    return count


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
    lru_get, ttl_get = t["cachetools LRUCache.get(k)"], t["cachetools TTLCache.get(k)"]
    mapped, mapped_get = t["mapping= store.jobs[k]"], t["mapping= store.jobs.get(k)"]
    touched, bare = t["@touches accessor"], t["same accessor, undecorated"]
    other, other_bare = t["@touches accessor, other body"], t["same other body, undecorated"]
    overhead, other_overhead = difference(touched, bare), difference(other, other_bare)
    service = built["service"]
    touches_plain = touches_per_call(service, lambda: service.get_job(built["keys"][0]))
    touches_other = touches_per_call(service, lambda: service.get_status(built["keys"][0]))
    rows = [
        timing_row(plain),
        timing_row(t["dict subclass[k] (Python __getitem__)"], [plain],
                   note="floor for any Python-level hook"),
        timing_row(store, [lru, ttl, plain, *cb]),
        timing_row(get, [lru_get, ttl_get, plain]),
        timing_row(mapped, [lru, plain]),
        timing_row(mapped_get, [lru_get, plain]),
        timing_row(touched, [bare, lru_get],
                   note=f"adds {overhead * 1e9:.0f} ns over the bare method; "
                        f"{touches_plain} touch per call"),
        timing_row(bare, [plain]),
        timing_row(other, [other_bare, lru_get],
                   note=f"adds {other_overhead * 1e9:.0f} ns over the bare method; "
                        f"{touches_other} touches per call"),
        timing_row(other_bare, [plain]),
        timing_row(lru, [plain]),
        timing_row(lru_get, [plain]),
        timing_row(ttl, [plain]),
        timing_row(ttl_get, [plain]),
        *(timing_row(timing, [plain]) for timing in cb),
    ]
    targets = [
        target("store[k] vs cachetools LRUCache[k]", ratio(store, lru), "<=", 1.0, "x",
               detail=f"{store.best * 1e9:.0f} ns vs {lru.best * 1e9:.0f} ns"),
        target("store[k] vs cachetools TTLCache[k]", ratio(store, ttl), "<=", 0.45, "x",
               detail=f"{store.best * 1e9:.0f} ns vs {ttl.best * 1e9:.0f} ns"),
        target("mapping= store.jobs.get(k) vs cachetools LRUCache.get(k)",
               ratio(mapped_get, lru_get), "<=", 1.0, "x",
               detail=f"{mapped_get.best * 1e9:.0f} ns vs {lru_get.best * 1e9:.0f} ns"),
        target("@touches accessor overhead over the bare method", overhead * 1e9, "<=", 200,
               "ns", detail=f"{touched.best * 1e9:.0f} ns vs {bare.best * 1e9:.0f} ns"),
        target("@touches accessor (other body) overhead over the bare method",
               other_overhead * 1e9, "<=", 200, "ns",
               detail=f"{other.best * 1e9:.0f} ns vs {other_bare.best * 1e9:.0f} ns"),
        target("touches per @touches accessor call reading through self.jobs.get",
               touches_plain, "<=", 1, "",
               detail="return self.jobs.get(job_id); "
                      f"{touches_other} with another body that reads through it"),
    ]
    notes = [f"{n_jobs} jobs per contender; {UNROLL} different keys read per timed loop."]
    if cachebox is None:
        notes.append("cachebox is not installed: its rows are left out.")
    return case("access", "1. access: read one job (per read)", rows=rows, targets=targets,
                notes=notes, params={"jobs": n_jobs, "unroll": UNROLL})
