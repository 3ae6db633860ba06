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

Then the worker's memory: a fresh interpreter stores 200 seed-like jobs (64 KB results) in
an in-process managed store, or in a RedisStore, polls each job's status five times, and
reports how much its RSS grew.

RQ's result storage is not measured: RQ is not a dependency of the suite.
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

from benchmarks import Settings, TimeFunc, case, compare, row, timeit_func, timing_row

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


def build(url: str) -> dict[str, TimeFunc]:
    """The contenders, on stores and keys filled beforehand."""
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
          "raw_read_touch": raw_read_touch, "raw_insert": raw_insert}
    return {
        "store[k]": timeit_func("store[next(k)]", ns),
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
    }


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
    t = compare(build(url), settings, group="redis")
    rows = [
        timing_row(t["store[k]"], [t["HGETALL + ZADD XX (pipelined)"], t["HGETALL"]]),
        timing_row(t["HGETALL + ZADD XX (pipelined)"]),
        timing_row(t["HGETALL"]),
        timing_row(t['job["status"] = ...'], [t["HSET"]]),
        timing_row(t["HSET"]),
        timing_row(t["store[new] = job at max_jobs"],
                   [t["MULTI HSET ZADD ZADD ZPOPMIN EXEC + DEL"]]),
        timing_row(t["MULTI HSET ZADD ZADD ZPOPMIN EXEC + DEL"]),
        timing_row(t[f"pass evicting nothing, {JOBS} jobs"], [t["ZRANGEBYSCORE LIMIT 0 100"]],
                   note="two round trips: the pass (figures included), INFO memory"),
        timing_row(t["ZRANGEBYSCORE LIMIT 0 100"]),
    ]
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
        "No target is set (issue 14 asks for the comparison); RQ's result storage is not "
        "measured (RQ is not a dependency of the suite).",
    ]
    return case("redis", title, rows=rows, notes=notes,
                params={"jobs": JOBS, "max_jobs": MAX_JOBS})
