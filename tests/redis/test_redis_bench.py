"""Smoke test of the Redis benchmark case: it runs at tiny settings against the test server
and reports well-formed rows, RQ's comparison included. No timing is asserted (figures
belong to `python -m benchmarks`)."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import Settings, bench_redis
from benchmarks import __main__ as suite


@pytest.mark.slow  # ~15 s: the whole Redis case, RQ's comparison included
def test_bench_redis_runs(redis_url: str) -> None:
    assert bench_redis.rq_missing() == ""  # RQ is in the bench extra: its rows must run
    result = bench_redis.run(True, settings=Settings(rounds=2, sample_seconds=0.0002),
                             url=redis_url)
    assert result["id"] == "redis" and not result["skipped"]
    names = [line["name"] for line in result["rows"]]
    assert "store[k]" in names and "store[new] = job at max_jobs" in names
    for op in ("store[k]", 'store[k]["result"]', 'job["status"] = ...',
               "store[new] = job at max_jobs", "HGETALL"):
        assert f"Redis time: {op}" in names  # INFO commandstats, per call
    assert [t["name"] for t in result["targets"]] == [
        "store[k] / pipelined HGETALL + ZADD XX", "Redis time of store[k] / HGETALL's"]
    for line in result["rows"]:
        assert line["unit"] in ("s", "bytes", "jobs") and math.isfinite(line["value"])
        assert line["value"] > 0 or line["unit"] == "bytes"  # RSS can even shrink
    by_name = {line["name"]: line for line in result["rows"]}
    in_process = by_name["worker RSS growth, 200 jobs with 64 KB results, in-process store"]
    assert in_process["value"] > 200 * 65536 / 2  # the in-process store holds the results
    # RQ: each memguard operation is timed against its RQ counterpart, in the same run.
    for ours, theirs in [('job["result"] = r; job["status"] = "done"',
                          "RQ: worker's success pipeline (result_ttl)"),
                         ('store[k]["status"]', "RQ: Job.fetch(k).get_status(refresh=False)"),
                         ('store[k]["result"]', "RQ: Job.fetch(k).return_value()")]:
        assert [r["peer"] for r in by_name[ours]["ratios"]] == [theirs]
        assert by_name[theirs]["unit"] == "s"
    # The burst: RQ keeps every job until its TTL; the store keeps its bound.
    jobs, bound = bench_redis.BURST // 2, bench_redis.BURST_BOUND // 2
    kept = {line["name"].split(": ")[1].split(" keeps")[0]: line["value"]
            for line in result["rows"] if line["unit"] == "jobs"}
    assert kept == {"RQ": jobs, "RedisStore": bound}
    memory = {line["name"]: line["value"] for line in result["rows"]
              if line["name"].startswith("burst: Redis memory")}
    assert memory["burst: Redis memory, RQ"] > memory["burst: Redis memory, RedisStore"] > 0
    assert any("Not comparable" in note for note in result["notes"])
    json.dumps(result)
    assert suite.render_case(result).startswith("== 8. Redis stores")
    assert "redis" in suite.CASES
