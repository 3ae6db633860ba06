"""Several processes sharing one RedisStore: the count bound holds across them, passes run
at once never evict a job twice, running jobs are never evicted, and every job is either
still stored or accounted for by exactly one eviction event."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import redis

WORKER = r'''
import json, sys
from memguard import MemoryManager, Policy, handle, managed_store
from memguard.redis import RedisStore

url, worker, jobs, max_jobs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
manager = MemoryManager(Policy())
events = []
manager.on_evict(events.append)

@managed_store(name="shared", manager=manager, max_jobs=max_jobs)
class Shared(RedisStore):
    pass

store = Shared(url)
lost_running = 0
for i in range(jobs):
    job_id = f"{worker}-{i}"
    store[job_id] = {"status": "running", "result": None, "worker": worker}
    job = store.get(job_id)
    if job is None:  # a running job must still be there: never evicted
        lost_running += 1
        continue
    job["result"] = "r" * 200
    job["status"] = "done"
    if i % 5 == 0:
        handle(store).cleanup()  # passes from every worker, at the same time
handle(store).cleanup()
print(json.dumps({"events": [[e.key, e.cause.value, e.size] for e in events],
                  "lost_running": lost_running}))
'''

WORKERS = 3
JOBS = 150
MAX_JOBS = 10


def test_processes_share_one_bounded_store(redis_url: str, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    client = redis.Redis.from_url(redis_url)
    counts: list[int] = []
    done = threading.Event()

    def watch() -> None:  # the number of jobs, sampled while the workers run
        while not done.is_set():
            counts.append(int(client.zcard("memguard:{shared}:created")))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        processes = [subprocess.Popen(
            [sys.executable, str(script), redis_url, f"w{n}", str(JOBS), str(MAX_JOBS)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(WORKERS)]
        outputs = [process.communicate(timeout=240) for process in processes]
    finally:
        done.set()
        watcher.join()
    for process, (_out, err) in zip(processes, outputs):
        assert process.returncode == 0, err
    reports = [json.loads(out) for out, _err in outputs]
    assert sum(report["lost_running"] for report in reports) == 0
    evicted = [key for report in reports for key, _cause, _size in report["events"]]
    assert len(evicted) == len(set(evicted)), "a job was evicted twice"
    assert {cause for report in reports for _k, cause, _s in report["events"]} == {"count"}
    remaining = {key.decode() for key in client.zrange("memguard:{shared}:created", 0, -1)}
    everything = {f"w{n}-{i}" for n in range(WORKERS) for i in range(JOBS)}
    assert remaining | set(evicted) == everything and not remaining & set(evicted)
    assert len(remaining) == MAX_JOBS
    # Each insert adds and evicts in one script: no reader ever saw the store over its bound
    # except by running jobs (at most one per worker, and never evicted).
    assert counts and max(counts) <= MAX_JOBS + WORKERS


PASSER = r'''
import json, sys
from memguard import MemoryManager, Policy, handle, managed_store
from memguard.redis import RedisStore, _core

_core.PASS_BATCH = 5  # many small pass scripts, so that the workers' passes interleave
manager = MemoryManager(Policy())
events = []
manager.on_evict(events.append)

@managed_store(name="aged", manager=manager, max_age="1s")
class Aged(RedisStore):
    pass

store = Aged(sys.argv[1])
store.client.ping()
print("ready", flush=True)
sys.stdin.readline()  # every worker starts its passes at the same moment
for _ in range(20):
    handle(store).cleanup()
print(json.dumps([[e.key, e.cause.value] for e in events]))
'''


def test_passes_at_once_never_evict_twice(redis_url: str, tmp_path: Path) -> None:
    from memguard import MemoryManager, Policy, managed_store
    from memguard.redis import RedisStore

    @managed_store(name="aged", manager=MemoryManager(Policy()))
    class Aged(RedisStore):
        pass

    store = Aged(redis_url)
    jobs = {f"j{i}" for i in range(1500)}
    for key in sorted(jobs):
        store[key] = {"status": "done", "result": "x" * 50}
    store["running"] = {"status": "running"}
    client = store.client
    while True:  # until every job is past max_age by Redis' clock
        seconds, micros = client.time()
        newest = client.zrange("memguard:{aged}:created", -1, -1, withscores=True)[0][1]
        if seconds + micros / 1e6 - newest > 1.0:
            break
    script = tmp_path / "passer.py"
    script.write_text(PASSER)
    processes = [subprocess.Popen([sys.executable, str(script), redis_url], text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for _ in range(WORKERS)]
    for process in processes:  # wait until all are imported and connected ...
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
    for process in processes:  # ... then release them together
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [process.communicate(timeout=240) for process in processes]
    for process, (_out, err) in zip(processes, outputs):
        assert process.returncode == 0, err
    evicted = [key for out, _err in outputs for key, cause in json.loads(out)]
    assert len(evicted) == len(set(evicted)), "a job was evicted twice"
    assert set(evicted) == jobs
    assert list(store) == ["running"]
