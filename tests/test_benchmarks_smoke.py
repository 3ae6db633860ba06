"""Smoke test of the benchmark suite: every piece runs at tiny sizes and reports well-formed
results. No timing is asserted here; the figures belong to `python -m benchmarks`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import Settings, Timing, case, compare, ratio, row, target, timeit_func
from benchmarks import __main__ as suite

TINY = Settings(rounds=2, sample_seconds=0.0002, warmups=1)


def assert_well_formed(result: dict[str, Any], case_id: str) -> None:
    """The shape `__main__` prints and writes: rows with figures, ratios, targets with verdicts."""
    assert result["id"] == case_id
    assert result["title"]
    assert not result["skipped"], result["skipped"]
    assert result["rows"]
    for line in result["rows"]:
        assert line["name"] and isinstance(line["unit"], str)
        assert isinstance(line["value"], (int, float)) and math.isfinite(line["value"])
        for item in line["ratios"]:
            assert item["peer"] and item["ratio"] > 0 and math.isfinite(item["ratio"])
    for goal in result["targets"]:
        assert goal["op"] in ("<=", ">=")
        assert goal["met"] in (True, False)
        assert math.isfinite(goal["figure"])
    json.dumps(result)  # everything goes to JSON as it is
    assert suite.render_case(result).startswith("== ")


def test_harness_interleaves_and_reports_pyperf_statistics() -> None:
    slow = timeit_func("sum(r)", {"r": range(200)})
    fast = timeit_func("len(r)", {"r": range(200)})
    timings = compare({"slow": slow, "fast": fast}, TINY, group="smoke")
    assert set(timings) == {"slow", "fast"}
    for timing in timings.values():
        assert len(timing.values) == TINY.rounds and len(timing.warmups) == TINY.warmups
        assert timing.loops >= 1 and all(value > 0 for value in timing.values)
        stats = timing.stats()
        assert stats["values"] == TINY.rounds and stats["min"] <= stats["median"]
    assert ratio(timings["slow"], timings["fast"]) > 0


def test_records_and_targets() -> None:
    timing = Timing("x", [2e-9, 3e-9], loops=10)
    assert timing.best == 2e-9 and timing.median == 2.5e-9
    assert target("t", 0.5, "<=", 1.0, "x")["met"] is True
    assert target("t", 80.0, ">=", 85.0, "%")["met"] is False
    assert target("t", None, "<=", 1.0, "x")["met"] is None
    result = case("c", "c", rows=[row("r", 1.0, "bytes", ratios=[("p", 2.0)])])
    assert result["rows"][0]["ratios"] == [{"peer": "p", "ratio": 2.0}]


@pytest.mark.parametrize(("value", "unit", "text"), [
    (1.5e-8, "s", "15 ns"), (2.5e-6, "s", "2.5 us"), (0.0123, "s", "12.3 ms"),
    (133.0, "bytes", "133 B"), (99.25, "%", "99.2%"), (0.744, "x", "0.744x"), (None, "s", "n/a"),
])
def test_format_value(value: Any, unit: str, text: str) -> None:
    assert suite.format_value(value, unit) == text


def test_access_case() -> None:
    from benchmarks import bench_access

    result = bench_access.run(True, settings=TINY, n_jobs=64)
    assert_well_formed(result, "access")
    assert len(result["targets"]) == 6
    touches = [goal for goal in result["targets"] if goal["name"].startswith("touches per")]
    assert [goal["figure"] for goal in touches] == [1]  # a count, not a time: exact


def test_insert_case() -> None:
    from benchmarks import bench_insert

    result = bench_insert.run(True, settings=TINY, capacities=(20, 40))
    assert_well_formed(result, "insert")


def test_pass_case() -> None:
    from benchmarks import bench_pass

    result = bench_pass.run(True, settings=TINY, sizes=(100, 200), turnover=3)
    assert_well_formed(result, "pass")
    assert [t["name"].split(":")[0] for t in result["targets"]] == [
        "pass evicting nothing (evict 0, fresh)", "pass evicting nothing (evict 0, after turnover)",
        "pass evicting nothing (evict 0, after jobs finished)",
        "pass evicting nothing (evict 0, 10% running)",
        "pass evicting nothing (evict 0, fresh, 1e+02 jobs) vs TTLCache.expire()"]
    notes = {line["name"]: line["note"] for line in result["rows"]}
    assert notes["pass, 2e+02 jobs, evict 1%"].startswith("2 evicted per pass")  # 1% of 200


def test_threads_case_counts_the_writer_and_the_readers() -> None:
    from benchmarks import bench_threads

    result = bench_threads.run(True, rounds=1, seconds=0.2)
    assert_well_formed(result, "threads")
    figures = {row["name"]: row["value"] for row in result["rows"]}
    for name in ("managed store (max_jobs, lock-free reads)", "cachetools LRUCache + Lock"):
        writer = figures[f"{name}: writer"]
        assert 0 < writer < figures[f"{name}: writer + {bench_threads.READERS} readers"]
    assert all(t["figure"] is not None for t in result["targets"])


@pytest.mark.slow  # ~2-6 s: the whole bookkeeping case
def test_bookkeeping_case() -> None:
    from benchmarks import bench_bookkeeping

    result = bench_bookkeeping.run(True, n_jobs=300)
    assert_well_formed(result, "bookkeeping")
    assert result["rows"][1]["value"] > 0


def test_reclaim_worker_in_process_and_in_a_subprocess() -> None:
    from benchmarks import bench_reclaim

    here = bench_reclaim.worker("json-interleaved", "memguard", 1)
    assert here["jobs"] > 0 and here["filled"] >= here["before"]
    assert here["running"] == len(range(0, here["jobs"], bench_reclaim.RUNNING_EVERY))
    assert here["left"] == here["running"]  # running jobs are never evicted
    assert here["mechanism"] == here["allocator"]["trim"]
    there = bench_reclaim.measure("text", "gc", 1, "malloc")
    assert there["allocator"]["small_objects"] == "malloc" and there["mechanism"] == "gc.collect()"
    assert math.isfinite(there["returned_percent"])


def test_reclaim_clustered_survivors_are_created_together() -> None:
    from benchmarks import bench_reclaim

    order = bench_reclaim._order("json-clustered", 0, bench_reclaim.BLOCK)
    running = [i for i, is_running in order if is_running]
    assert len(running) == bench_reclaim.BLOCK // bench_reclaim.RUNNING_EVERY
    assert [is_running for _, is_running in order[:len(running)]] == [True] * len(running)
    interleaved = bench_reclaim._order("json-interleaved", 0, 20)
    assert [i for i, is_running in interleaved if is_running] == [0, 10]


@pytest.mark.slow  # ~9 s: an interpreter per allocator and payload
def test_reclaim_case_matrix_at_a_tiny_size() -> None:
    from benchmarks import bench_reclaim

    result = bench_reclaim.run(True, megabytes=2, allocators=("pymalloc", "jemalloc"))
    assert_well_formed(result, "reclaim")
    names = [line["name"] for line in result["rows"]]
    if "jemalloc" in result["params"]["skipped"]:
        assert "jemalloc" not in result["params"]["allocators"]
    else:
        assert "json-interleaved, jemalloc: memguard" in names
        note = next(line["note"] for line in result["rows"]
                    if line["name"] == "text, jemalloc: memguard")
        assert "jemalloc_purge" in note
    assert "json-clustered, pymalloc: gc" in names
    assert [t["name"] for t in result["targets"]][1].startswith("parsed JSON, interleaved")
    cells, skipped = bench_reclaim.matrix(1, ("pymalloc",), ("text",))
    table = bench_reclaim.markdown(cells, skipped)
    assert table.splitlines()[0] == "| kind | method | pymalloc |"
    assert len(table.splitlines()) == 4


def test_reclaim_says_why_an_allocator_is_unavailable() -> None:
    from benchmarks import bench_reclaim

    why = bench_reclaim.unavailable("mimalloc")
    assert why == "" or "does not start" in why


def test_stress_case() -> None:
    from benchmarks import bench_stress

    result = bench_stress.run(True, minutes=1, seeds=(1,))
    assert_well_formed(result, "stress")
    assert [line["name"] for line in result["rows"]] == [
        "seed 1: guarded peak / limit", "seed 1: baseline peak / limit"]


def test_results_case() -> None:
    from benchmarks import bench_results

    # one short server run (real gunicorn, 3 s at 25 MiB/s) beside the stress rows
    result = bench_results.run(True, minutes=10, seeds=(1,), rates=(25,), server_seconds=3.0)
    assert_well_formed(result, "results")
    assert [line["name"] for line in result["rows"]] == [
        "server 25 MiB/s: results lost (memguard)",
        "server 25 MiB/s: results lost (clairvoyant reference)",
        "server 25 MiB/s: peak RSS",
        "default, seed 1: results lost (memguard)",
        "default, seed 1: results lost (clairvoyant reference)",
        "soft, seed 1: results lost (memguard)",
        "soft, seed 1: results lost (clairvoyant reference)",
        "seed 1: clairvoyant reference at 25 MiB of results",
        "seed 1: clairvoyant reference at 50 MiB of results",
        "seed 1: clairvoyant reference at 100 MiB of results"]
    assert "polls of finished results" in result["rows"][0]["note"]
    assert "greedy Belady with sizes" in result["rows"][1]["note"]
    assert result["rows"][2]["value"] > 0
    assert "gap" in result["rows"][4]["note"]
    assert "LP bound" in result["rows"][-1]["note"]
    server = result["params"]["server"]
    assert len(server) == 1 and server[0]["reference"]["wanted"] > 0
    assert server[0]["lost_running"] == server[0]["bad_statuses"] == 0


def test_main_prints_the_table_and_writes_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    def fake_run(quick: bool) -> dict[str, Any]:
        return case("fake", "fake case", rows=[row("thing", 1e-7, "s", ratios=[("peer", 0.5)])],
                    targets=[target("thing vs peer", 0.5, "<=", 1.0, "x")])

    def broken_run(quick: bool) -> dict[str, Any]:
        raise RuntimeError("boom")

    runs = {"benchmarks.bench_access": fake_run, "benchmarks.bench_insert": broken_run}
    monkeypatch.setattr(suite, "load_case", lambda name: runs[name])
    out, markdown = tmp_path / "results.json", tmp_path / "results.md"
    assert suite.main(["--quick", "--only", "access", "insert", "--json", str(out),
                       "--markdown", str(markdown), "--pyperf", str(tmp_path / "pyperf.json")]) == 0
    printed = capsys.readouterr().out
    assert "== fake case ==" in printed and "MET" in printed and "failed: RuntimeError" in printed
    report = json.loads(out.read_text())
    assert report["quick"] is True and [c["id"] for c in report["cases"]] == ["fake", "insert"]
    assert report["targets"][0]["met"] is True and report["environment"]["python"]
    tables = markdown.read_text()
    assert "| fake | thing vs peer | 0.5x | <= 1x | met |" in tables
    assert "| thing | 100 ns |" in tables and "Skipped: failed: RuntimeError" in tables


@pytest.mark.slow  # ~13 s: guarded and unguarded stress runs in subprocesses
def test_guard_case() -> None:
    """One rate for 2 s per contender; recycling every few requests, so that the exit hook
    and the polling of several workers run too."""
    from benchmarks import bench_guard

    result = bench_guard.run(True, rates=(10,), seconds=2.0, volume=0, max_requests=(3, 1))
    assert_well_formed(result, "guard")
    assert [line["name"] for line in result["rows"]] == [
        "10 MB/s: memguard", "10 MB/s: no guard", "10 MB/s: max_requests 3+1"]
    cells = {cell["contender"]: cell for cell in result["params"]["cells"]}
    assert all(cell["accepted"] > 0 and cell["peak"] > 0 for cell in cells.values())
    assert cells["max_requests"]["workers"] > 1  # recycled at least once
    assert cells["memguard"]["emergencies"] == 0 and cells["no guard"]["emergencies"] is None
    assert "| 10 MB/s (" in bench_guard.table(result)
