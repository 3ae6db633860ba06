"""Smoke test of the Redis benchmark case: it runs at tiny settings against the test server
and reports well-formed rows. No timing is asserted (figures belong to `python -m benchmarks`)."""

from __future__ import annotations

import json
import math

from benchmarks import Settings, bench_redis
from benchmarks import __main__ as suite


def test_bench_redis_runs(redis_url: str) -> None:
    result = bench_redis.run(True, settings=Settings(rounds=2, sample_seconds=0.0002),
                             url=redis_url)
    assert result["id"] == "redis" and not result["skipped"]
    names = [line["name"] for line in result["rows"]]
    assert "store[k]" in names and "store[new] = job at max_jobs" in names
    for line in result["rows"]:
        assert line["unit"] in ("s", "bytes") and math.isfinite(line["value"])
        assert line["value"] > 0 or line["unit"] == "bytes"  # RSS can even shrink
    in_process, _in_redis = (line["value"] for line in result["rows"] if line["unit"] == "bytes")
    assert in_process > 200 * 65536 / 2  # the in-process store holds the results
    json.dumps(result)
    assert suite.render_case(result).startswith("== 8. Redis stores")
    assert "redis" in suite.CASES
