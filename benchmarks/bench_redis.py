"""Case 8, Redis stores: each operation against redis-py doing the same by hand (the floor).

A `redis-server` on 127.0.0.1 (started here on a free port, no persistence, unless `url=`
names one) holds a managed `RedisStore` and, beside it, hand-made keys for the raw
commands. Every contender is one round trip over loopback, so the ratios show what the
store adds on top of the network: Lua, argument building, JSON, the live job object.

- read: `store[k]` (the `get` script: small fields plus a recency update) against a
  pipelined `HGETALL` + `ZADD XX`, and a bare `HGETALL` (no recency at all);
- live-field write: `job["status"] = ...` (the `set_field` script: sizes, recency,
  activeness) against a bare `HSET`;
- insert at the bound: `store[new] = job` in a store full at `max_jobs`, so each insert
  evicts one job in the same script, against a MULTI/EXEC of `HSET` + two `ZADD` + a
  `ZPOPMIN` and `DEL` of the oldest (no active check, no sizes: less than the store does);
- a pass evicting nothing over 10 000 jobs: `handle.cleanup()` against the
  `ZRANGEBYSCORE ... LIMIT 0 100` a hand-written expiry would send.

Then RQ's result storage (`rq`, in the `bench` extra; the rows are skipped, saying so,
without it), on the same server in the same run, where its operations are comparable:

- finish a job: what RQ's worker sends on success (`Job.set_status`, `Job.save`,
  `Result.create` with `result_ttl`, the finished registry's `ZADD`, `Job.cleanup`'s
  `EXPIRE`s, in one MULTI/EXEC) against memguard's `job["result"] = r; job["status"] =
  "done"` on a live job (two scripts, two round trips);
- poll a status: `Job.fetch(id).get_status(refresh=False)` (one `HGETALL`) against
  `store[id]["status"]` (one script);
- read a result back: `Job.fetch(id).return_value()` (`HGETALL` + `XREVRANGE`) against
  `store[id]["result"]` (the `get` script + `HGET`);
- housekeeping with nothing to expire: `FinishedJobRegistry.cleanup()` (one
  `ZREMRANGEBYSCORE`) beside the pass above;
- expiry against the bound (not timed): a burst of jobs with 4 KB results stored through RQ
  (`result_ttl` 500 s, its default) and through a RedisStore with `max_jobs` and `max_age`
  500 s: how many jobs each keeps, and how much Redis memory they take.

Then the worker's memory: a fresh interpreter stores 200 seed-like jobs (64 KB results) in
an in-process managed store, or in a RedisStore, polls each job's status five times, and
reports how much its RSS grew.
"""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

from benchmarks import (
    Settings,
    TimeFunc,
    Timing,
    case,
    compare,
    row,
    target,
    timeit_func,
    timing_row,
)

JOBS = 10_000
MAX_JOBS = 1_000
RESULT = "x" * 200


@contextmanager
def redis_server() -> Iterator[Optional[str]]:
    """A private redis-server's URL, or None when there is no redis-server on PATH."""
    executable = shutil.which("redis-server")
    if executable is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="memguard-bench-redis-")
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def build(url: str) -> tuple[dict[str, TimeFunc], dict[str, Any]]:
    """The contenders, on stores and keys filled beforehand, and their namespace."""
    import redis

    from memguard import MemoryManager, Policy, handle, managed_store
    from memguard.redis import RedisStore

    client = redis.Redis.from_url(url)
    client.flushall()
    manager = MemoryManager(Policy())

    @managed_store(name="bench_read", manager=manager)
    class ReadJobs(RedisStore):
        pass

    @managed_store(name="bench_insert", max_jobs=MAX_JOBS, manager=manager)
    class BoundedJobs(RedisStore):
        pass

    @managed_store(name="bench_pass", max_age="1h", max_jobs=JOBS * 2, manager=manager)
    class PassJobs(RedisStore):
        pass

    reads, bounded, passes = ReadJobs(url), BoundedJobs(url), PassJobs(url)
    raw_pipe = client.pipeline(transaction=False)
    for i in range(JOBS):
        job = {"status": "done", "result": RESULT, "n": i}
        reads[f"j{i}"] = job
        passes[f"j{i}"] = job
        raw_pipe.hset(f"raw:j:{i}", mapping={"status": '"done"', "result": f'"{RESULT}"',
                                             "n": str(i)})
        raw_pipe.zadd("raw:recency", {f"j{i}": i})
        if i % 500 == 499:
            raw_pipe.execute()
    raw_pipe.execute()
    for i in range(MAX_JOBS):
        bounded[f"j{i}"] = {"status": "done", "result": RESULT}
        client.hset(f"rawb:j:{i}", mapping={"status": '"done"', "result": f'"{RESULT}"'})
        client.zadd("rawb:created", {f"j{i}": i})
    live = reads["j1"]
    keys = itertools.cycle([f"j{i}" for i in range(JOBS)])
    fresh = itertools.count(MAX_JOBS)
    raw_fresh = itertools.count(MAX_JOBS)

    def raw_read_touch(key: str) -> Any:
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(f"raw:j:{key[1:]}")
        pipe.zadd("raw:recency", {key: time.time()}, xx=True)
        return pipe.execute()[0]

    def raw_read_result(key: str) -> Any:
        client.hgetall(f"raw:j:{key[1:]}")
        return client.hget(f"raw:j:{key[1:]}", "result")

    def raw_insert(n: int) -> None:
        pipe = client.pipeline(transaction=True)
        pipe.hset(f"rawb:j:{n}", mapping={"status": '"done"', "result": f'"{RESULT}"'})
        pipe.zadd("rawb:created", {f"j{n}": n})
        pipe.zadd("rawb:recency", {f"j{n}": n})
        pipe.zpopmin("rawb:created")
        pipe.execute()
        client.delete(f"rawb:j:{n - MAX_JOBS}")

    store_handle = handle(passes)
    ns = {"store": reads, "k": keys, "live": live, "client": client, "bounded": bounded,
          "fresh": fresh, "raw_fresh": raw_fresh, "RESULT": RESULT, "h": store_handle,
          "raw_read_touch": raw_read_touch, "raw_insert": raw_insert,
          "raw_read_result": raw_read_result}
    return {
        "store[k]": timeit_func("store[next(k)]", ns),
        'store[k]["result"], store of 10 000': timeit_func("store[next(k)]['result']", ns),
        "HGETALL; HGET": timeit_func("raw_read_result(next(k))", ns),
        "HGETALL + ZADD XX (pipelined)": timeit_func("raw_read_touch(next(k))", ns),
        "HGETALL": timeit_func("client.hgetall('raw:j:' + next(k)[1:])", ns),
        'job["status"] = ...': timeit_func("live['status'] = 'done'", ns),
        "HSET": timeit_func("client.hset('raw:j:1', 'status', '\"done\"')", ns),
        "store[new] = job at max_jobs": timeit_func(
            "bounded[f'j{next(fresh)}'] = {'status': 'done', 'result': RESULT}", ns),
        "MULTI HSET ZADD ZADD ZPOPMIN EXEC + DEL": timeit_func("raw_insert(next(raw_fresh))",
                                                             ns),
        f"pass evicting nothing, {JOBS} jobs": timeit_func("h.cleanup()", ns),
        "ZRANGEBYSCORE LIMIT 0 100": timeit_func(
            "client.zrangebyscore('raw:recency', '-inf', '(0', start=0, num=100)", ns),
    }, ns


#: Calls per operation when measuring Redis' own time (INFO commandstats).
SERVER_CALLS = 2_000

#: Each operation whose Redis time is measured: the statement, and the commands it sends
#: itself (a script's inner commands are counted inside its EVALSHA, and also under their
#: own names, so only the top-level commands are summed).
SERVER_OPS = {
    "store[k]": ("store[next(k)]", ("hgetall", "evalsha")),
    'store[k]["result"]': ("store[next(k)]['result']", ("hgetall", "hget", "evalsha")),
    'job["status"] = ...': ("live['status'] = 'done'", ("evalsha",)),
    "store[new] = job at max_jobs": (
        "bounded[f'j{next(fresh)}'] = {'status': 'done', 'result': RESULT}", ("evalsha",)),
    f"pass evicting nothing, {JOBS} jobs": ("h.cleanup()", ("evalsha",)),
    "HGETALL": ("client.hgetall('raw:j:' + next(k)[1:])", ("hgetall",)),
}


def server_costs(ns: dict[str, Any], calls: int = SERVER_CALLS) -> dict[str, float]:
    """Redis' own time per operation (seconds), from INFO commandstats: CONFIG RESETSTAT,
    `calls` operations, then the summed `usec` of the commands the operation sends."""
    client = ns["client"]
    found: dict[str, float] = {}
    for name, (stmt, commands) in SERVER_OPS.items():
        run_op = timeit_func(stmt, ns)
        run_op(min(calls, 200))  # warm: scripts loaded, caches filled
        ns["store"]._core.flush_reads()
        client.config_resetstat()
        run_op(calls)
        ns["store"]._core.flush_reads()  # the recency updates these reads owe, counted
        stats = client.info("commandstats")
        usec = sum(stats.get(f"cmdstat_{command}", {}).get("usec", 0) for command in commands)
        found[name] = usec / 1e6 / calls
    return found


#: RQ's comparison: jobs filled beforehand, RQ's default result_ttl, and the burst of the
#: expiry-against-bound rows (jobs with BURST_RESULT-byte results, bounded at BURST_BOUND).
RQ_JOBS = 1_000
RESULT_TTL = 500
BURST = 3_000
BURST_BOUND = 1_000
BURST_RESULT = 4_096


def rq_missing() -> str:
    """Why RQ's rows cannot run here ("" when they can)."""
    try:
        import rq  # noqa: F401
    except ImportError:
        return "RQ is not installed (pip install 'memguard-jobs[bench]')"
    return ""


def render(n: int) -> str:
    """The function RQ's benchmark jobs name (never called: no RQ worker runs here)."""
    return RESULT * n


def rq_job(client: Any, job_id: str) -> Any:
    """A saved RQ job of queue `bench`, as `Queue.enqueue` would have saved it (not queued)."""
    from rq.job import Job

    job = Job.create(render, args=(1,), id=job_id, connection=client, origin="bench",
                     result_ttl=RESULT_TTL)
    job.save()
    return job


def rq_finish(client: Any, job: Any, value: Any) -> None:
    """What RQ's worker writes when `job` succeeds (`Worker.handle_job_success` less the
    worker's own counters and dependents): status, job hash, the result in its stream with
    `result_ttl`, the finished registry, the job keys' expiry; one MULTI/EXEC."""
    from rq.job import JobStatus
    from rq.results import Result

    with client.pipeline() as pipe:
        pipe.multi()
        job.set_status(JobStatus.FINISHED, pipeline=pipe)
        job.save(pipeline=pipe, include_meta=False)
        Result.create(job, Result.Type.SUCCESSFUL, ttl=RESULT_TTL, return_value=value,
                      pipeline=pipe)
        job.finished_job_registry.add(job, RESULT_TTL, pipe)
        job.cleanup(RESULT_TTL, pipeline=pipe, remove_from_queue=False)
        pipe.execute()


def build_rq(url: str) -> dict[str, TimeFunc]:
    """RQ's result storage and the same operations through a RedisStore, RQ_JOBS finished
    jobs each (RQ's keys live under `rq:`, the store's under `memguard:`: no clash)."""
    import redis
    from rq.job import Job
    from rq.registry import FinishedJobRegistry

    from memguard import MemoryManager, Policy, managed_store
    from memguard.redis import RedisStore

    client = redis.Redis.from_url(url)

    @managed_store(name="bench_rq", max_age=f"{RESULT_TTL}s", manager=MemoryManager(Policy()))
    class Results(RedisStore):
        pass

    store = Results(url)
    for i in range(RQ_JOBS):
        rq_finish(client, rq_job(client, f"q{i}"), RESULT)
        store[f"q{i}"] = {"status": "done", "result": RESULT}
    keys = itertools.cycle([f"q{i}" for i in range(RQ_JOBS)])
    live, rq_live = store["q0"], Job.fetch("q0", connection=client)
    registry = FinishedJobRegistry("bench", connection=client)
    ns = {"store": store, "k": keys, "live": live, "client": client, "Job": Job,
          "rq_live": rq_live, "rq_finish": rq_finish, "RESULT": RESULT, "registry": registry}
    return {
        'job["result"] = r; job["status"] = "done"': timeit_func(
            "live['result'] = RESULT; live['status'] = 'done'", ns),
        "RQ: worker's success pipeline (result_ttl)": timeit_func(
            "rq_finish(client, rq_live, RESULT)", ns),
        'store[k]["status"]': timeit_func("store[next(k)]['status']", ns),
        "RQ: Job.fetch(k).get_status(refresh=False)": timeit_func(
            "Job.fetch(next(k), connection=client).get_status(refresh=False)", ns),
        'store[k]["result"]': timeit_func("store[next(k)]['result']", ns),
        "RQ: Job.fetch(k).return_value()": timeit_func(
            "Job.fetch(next(k), connection=client).return_value()", ns),
        "RQ: FinishedJobRegistry.cleanup(), nothing expired": timeit_func(
            "registry.cleanup()", ns),
    }


def used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def burst(url: str, jobs: int = BURST, bound: int = BURST_BOUND) -> dict[str, int]:
    """Store `jobs` finished jobs with BURST_RESULT-byte results through RQ (expiry by
    result_ttl only) and through a RedisStore bounded at `bound` jobs (max_age =
    result_ttl): the jobs each keeps and the Redis memory (used_memory growth) they take."""
    import redis

    from memguard import MemoryManager, Policy, managed_store
    from memguard.redis import RedisStore

    client = redis.Redis.from_url(url)
    value = "r" * BURST_RESULT

    @managed_store(name="bench_burst", max_jobs=bound, max_age=f"{RESULT_TTL}s",
                   manager=MemoryManager(Policy()))
    class Burst(RedisStore):
        pass

    store = Burst(url)
    before = used_memory(client)
    for i in range(jobs):
        rq_finish(client, rq_job(client, f"b{i}"), value)
    rq_bytes = used_memory(client) - before
    rq_kept = sum(1 for _key in client.scan_iter("rq:results:b*", count=1000))
    before = used_memory(client)
    for i in range(jobs):
        store[f"b{i}"] = {"status": "running", "result": None}
        job = store[f"b{i}"]
        job["result"] = value
        job["status"] = "done"
    return {"rq_jobs": rq_kept, "rq_bytes": rq_bytes, "store_jobs": len(store),
            "store_bytes": used_memory(client) - before}


RSS_JOBS = 200
RSS_SCRIPT = r"""
import gc, json, sys, psutil
from memguard import MemoryManager, Policy, managed_store
from memguard.redis import RedisStore

kind, url, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
manager = MemoryManager(Policy())
if kind == "redis":
    @managed_store(name="rss", max_jobs=jobs, manager=manager)
    class Jobs(RedisStore):
        pass
    store = Jobs(url)
    store.clear()
else:
    @managed_store(name="rss", max_jobs=jobs, manager=manager)
    class Jobs(dict):
        pass
    store = Jobs()
gc.collect()
before = psutil.Process().memory_info().rss
for i in range(jobs):
    store[f"j{i}"] = {"status": "running", "result": None}
    job = store[f"j{i}"]
    job["result"] = {"text": chr(97 + i % 26) * 65536}  # a fresh 64 KB result per job
    job["status"] = "done"
for _ in range(5):
    for i in range(jobs):
        assert store.get(f"j{i}")["status"] == "done"
gc.collect()
print(json.dumps(psutil.Process().memory_info().rss - before))
"""


def rss_growth(kind: str, url: str) -> int:
    """RSS growth (bytes) of a fresh interpreter holding RSS_JOBS jobs in a `kind` store."""
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, kind, url, str(RSS_JOBS)],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    return int(json.loads(out))


def run(quick: bool, *, settings: Optional[Settings] = None,
        url: Optional[str] = None) -> dict[str, Any]:
    """Measure case 8 on the Redis at `url`, or on a private redis-server."""
    settings = settings or Settings.for_mode(quick)
    title = "8. Redis stores against raw redis-py (per operation, loopback)"
    if url is None:
        with redis_server() as started:
            if started is None:
                return case("redis", title, rows=[],
                            skipped="redis-server is not on PATH (apt-get install redis-server)")
            return run(quick, settings=settings, url=started)
    missing = rq_missing()
    contenders, ns = build(url)
    if not missing:
        contenders.update(build_rq(url))
    t = compare(contenders, settings, group="redis")
    server = server_costs(ns, 200 if quick else SERVER_CALLS)
    hgetall_server = server["HGETALL"]
    pass_peers = [t["ZRANGEBYSCORE LIMIT 0 100"]]
    if not missing:
        pass_peers.append(t["RQ: FinishedJobRegistry.cleanup(), nothing expired"])
    rows = [
        timing_row(t["store[k]"], [t["HGETALL + ZADD XX (pipelined)"], t["HGETALL"]],
                   note="one HGETALL; its recency update batched (one touch per 100 reads "
                        "or 0.5 s)"),
        timing_row(t['store[k]["result"], store of 10 000'], [t["HGETALL; HGET"]],
                   note="two round trips each"),
        timing_row(t["HGETALL; HGET"]),
        timing_row(t["HGETALL + ZADD XX (pipelined)"]),
        timing_row(t["HGETALL"]),
        timing_row(t['job["status"] = ...'], [t["HSET"]]),
        timing_row(t["HSET"]),
        timing_row(t["store[new] = job at max_jobs"],
                   [t["MULTI HSET ZADD ZADD ZPOPMIN EXEC + DEL"]]),
        timing_row(t["MULTI HSET ZADD ZADD ZPOPMIN EXEC + DEL"]),
        timing_row(t[f"pass evicting nothing, {JOBS} jobs"], pass_peers,
                   note="two round trips: the pass (figures included), INFO memory"),
        timing_row(t["ZRANGEBYSCORE LIMIT 0 100"]),
    ]
    rows += [
        row(f"Redis time: {name}", seconds, "s",
            ratios=[] if name == "HGETALL" else [("Redis time: HGETALL",
                                                  seconds / hgetall_server)],
            note="INFO commandstats usec of the commands it sends, per call")
        for name, seconds in server.items()
    ]
    read_ratio = t["store[k]"].best / t["HGETALL + ZADD XX (pipelined)"].best
    targets = [
        target("store[k] / pipelined HGETALL + ZADD XX", read_ratio, "<=", 1.5, "x"),
        target("Redis time of store[k] / HGETALL's", server["store[k]"] / hgetall_server,
               "<=", 5.0, "x"),
    ]
    if not missing:
        rows += rq_rows(t, url, quick)
    in_process, in_redis = rss_growth("dict", url), rss_growth("redis", url)
    rows += [
        row(f"worker RSS growth, {RSS_JOBS} jobs with 64 KB results, in-process store",
            in_process, "bytes"),
        row(f"worker RSS growth, {RSS_JOBS} jobs with 64 KB results, RedisStore", in_redis,
            "bytes", note="results live in Redis; reads of the status never fetch them"),
    ]
    notes = [
        "Each contender is one round trip to a redis-server on 127.0.0.1 (the raw insert is "
        "two: MULTI/EXEC, then DEL), so the ratios are the store's own cost over the "
        "network's.",
        "Targets (issue 23): a read at most 1.5x a pipelined HGETALL, its Redis time at most "
        "5x HGETALL's. Redis time comes from INFO commandstats after CONFIG RESETSTAT; a "
        "read's includes its share of the batched touch script.",
    ]
    if missing:
        notes.append(f"RQ's result storage is not measured: {missing}.")
    else:
        notes += RQ_NOTES
    return case("redis", title, rows=rows, notes=notes, targets=targets,
                params={"jobs": JOBS, "max_jobs": MAX_JOBS, "rq_jobs": RQ_JOBS,
                        "result_ttl": RESULT_TTL, "rq": "" if missing else rq_version()})


RQ_NOTES = [
    "RQ rows: same server, same run, interleaved with the others. Comparable: storing a "
    "finished job's result (RQ: its worker's success pipeline, one MULTI/EXEC; memguard: "
    "two live-field writes, two round trips), polling a status (one round trip each), "
    "reading a result back (two each), housekeeping with nothing to expire. RQ pickles "
    "(base64 in its result stream), memguard stores JSON.",
    "Not comparable, not measured: queueing and running jobs (memguard has no queue or "
    "worker; its store holds the job state the app writes). Expiry itself: RQ's result_ttl "
    "is Redis' own key expiry (EXPIRE), done inside Redis at no client cost, plus a "
    "finished-registry entry trimmed by cleanup(); memguard's age and idle rules run in "
    "the pass script. RQ has no count or byte bound and no protection of running jobs "
    "(its failure_ttl defaults to a year): the burst rows show what a bound changes.",
]


def rq_version() -> str:
    from importlib.metadata import version

    return version("rq")


def rq_rows(t: dict[str, Timing], url: str, quick: bool) -> list[dict[str, Any]]:
    """The RQ comparison's rows: three timed pairs, the registry cleanup, and the burst."""
    finish = 'job["result"] = r; job["status"] = "done"'
    rows = [
        timing_row(t[finish], [t["RQ: worker's success pipeline (result_ttl)"]],
                   note="two scripts; RQ's is one MULTI/EXEC of 8 commands"),
        timing_row(t["RQ: worker's success pipeline (result_ttl)"]),
        timing_row(t['store[k]["status"]'],
                   [t["RQ: Job.fetch(k).get_status(refresh=False)"]]),
        timing_row(t["RQ: Job.fetch(k).get_status(refresh=False)"]),
        timing_row(t['store[k]["result"]'], [t["RQ: Job.fetch(k).return_value()"]],
                   note="two round trips each"),
        timing_row(t["RQ: Job.fetch(k).return_value()"]),
        timing_row(t["RQ: FinishedJobRegistry.cleanup(), nothing expired"]),
    ]
    jobs, bound = (BURST // 2, BURST_BOUND // 2) if quick else (BURST, BURST_BOUND)
    found = burst(url, jobs, bound)
    rows += [
        row(f"burst of {jobs} jobs ({BURST_RESULT} B results): RQ keeps (result_ttl "
            f"{RESULT_TTL} s)", found["rq_jobs"], "jobs",
            note="every one, until its TTL: no count or byte bound"),
        row(f"burst of {jobs} jobs ({BURST_RESULT} B results): RedisStore keeps (max_jobs "
            f"{bound}, max_age {RESULT_TTL} s)", found["store_jobs"], "jobs",
            note="the newest, evicted at insert by the count bound"),
        row("burst: Redis memory, RQ", found["rq_bytes"], "bytes",
            note="used_memory growth; results pickled, then base64 (4/3)"),
        row("burst: Redis memory, RedisStore", found["store_bytes"], "bytes"),
    ]
    return rows
