"""Trace recording and `memguard tune`, end to end on the seed workload.

A short guarded stress run records a trace; the trace must hold no key; `tune` replays it and
finds a policy whose replay stays under the budget; the TOML it writes loads, and replaying
the loaded policy's bounds gives the figures `tune` printed. The replay of the recorded
policy must agree with what the run itself counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from memguard import MemoryManager, load_policy, managed_store
from memguard.testing import FakeClock
from memguard.tools import tune as tuning
from memguard.tools.cli.main import main
from memguard.tools.stress.config import StressConfig
from memguard.tools.stress.run import run


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A trace of 20 simulated minutes at a quarter of the sizes and a 160MB limit, recorded
    by `memguard stress --record` in a process of its own (its real memory decides the
    emergencies, so it must not be this test process, which has grown by then)."""
    where = tmp_path_factory.mktemp("trace")
    path, result = where / "seed.trace", where / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "memguard.tools.cli", "stress", "-q", "--minutes", "20", "--scale",
         "0.25", "--limit", "160MB", "--record", str(path), "--json", str(result)],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"trace: {path}" in done.stdout
    return path, json.loads(result.read_text(encoding="utf-8"))


def test_a_trace_holds_no_key_and_replays_the_recorded_policy(
        recorded: tuple[Path, dict[str, Any]]) -> None:
    path, result = recorded
    text = path.read_text(encoding="utf-8")
    assert "diagram-0" not in text and "iac-0" not in text  # job ids look like diagram-000001
    trace = tuning.read_trace(path)
    assert set(trace.stores) == {"diagram", "iac", "infrastructure", "application", "concept",
                                 "app_creation"}
    assert {record[0] for record in trace.records} >= {"i", "w", "r"}
    policy = load_policy(str(result["params"]["policy"]), environ={})
    outcome = tuning.replay(trace, tuning.current_bounds(policy, trace.stores))
    # same traffic, same bounds, no emergency in a run this small: the same results lost
    assert result["cleanups"] == 0
    assert outcome.lost == result["results_lost"] > 0


def test_tune_finds_a_policy_under_the_budget_and_writes_it(
        recorded: tuple[Path, dict[str, Any]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = recorded
    out = tmp_path / "tuned.toml"
    code = main(["tune", str(path), "--limit", "160MB", "--write", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "recommended" in printed and "current policy" in printed
    policy = load_policy(out, environ={})
    assert main(["policy", "check", str(out)]) == 0
    trace = tuning.read_trace(path)
    bounds = tuning.current_bounds(policy, trace.stores)
    outcome = tuning.replay(trace, bounds)
    budget = policy.memory.resolve(160 * 2**20).emergency
    assert budget is not None and outcome.peak < budget
    header = out.read_text(encoding="utf-8").splitlines()[0]
    assert f"{outcome.lost} of {outcome.wanted} results lost" in header


def test_tune_says_so_when_nothing_fits(recorded: tuple[Path, dict[str, Any]],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = recorded
    code = main(["tune", str(path), "--limit", "160MB", "--budget", "1MB"])
    assert code == 1
    assert "no candidate keeps the modelled peak under the budget" in capsys.readouterr().out


def test_a_bad_trace_is_named_with_its_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.trace"
    path.write_text('{"memguard_trace": 1}\n["s", 0, "a"]\n["r", 1.0, 0]\n', encoding="utf-8")
    assert main(["tune", str(path), "--limit", "512MB"]) == 1
    error = capsys.readouterr().err
    assert f"{path}, line 3" in error and "'r' record has 4 fields" in error


def test_the_recorder_sees_inserts_finishes_reads_and_evictions(tmp_path: Path) -> None:
    clock = FakeClock(0.0)
    manager = MemoryManager(clock=clock)

    @managed_store(manager=manager, max_jobs=2, name="jobs")
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    jobs = Jobs()
    jobs["before"] = {"status": "done", "result": "x" * 100}
    path = tmp_path / "t.trace"
    with manager.record(path) as recorder:
        jobs["a"] = {"status": "running", "result": None}
        clock.advance(5)
        jobs["a"] = {"status": "done", "result": "y" * 1000}
        jobs.get("a")
        clock.advance(5)
        jobs["b"] = {"status": "done", "result": "z" * 10}  # drains the read; evicts "before"
        recorder.missed("jobs", "before")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    kinds = [r[0] for r in records[1:] if isinstance(r, list)]
    assert kinds == ["s", "i", "i", "w", "r", "i", "d", "e", "m"], kinds
    hashes = {r[3] for r in records[1:] if isinstance(r, list) and r[0] != "s"}
    assert len(hashes) == 3 and not {"a", "b", "before"} & hashes
    jobs["c"] = {"status": "done", "result": ""}  # closed: nothing more is written
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(records)
    assert manager.recorders == ()


def test_delivered_keeps_more_unfetched_results_than_lru(tmp_path: Path) -> None:
    """Clients that never poll first read their result when they come back: under the same
    bounds, evicting delivered results first loses fewer of them than plain LRU does."""
    path = tmp_path / "unpolled.trace"
    # a limit far above this process's memory: no emergency, only the bounds evict
    run(StressConfig(minutes=30, scale=0.25, limit=64 * 2**30, record=str(path), unpolled=0.5))
    trace = tuning.read_trace(path)
    lost = {}
    for order in ("lru", "delivered"):
        bounds = {name: tuning.Bounds(max_jobs=15, order=order) for name in trace.stores}
        lost[order] = tuning.replay(trace, bounds)
    assert lost["delivered"].wanted == lost["lru"].wanted > 0
    assert lost["delivered"].lost < lost["lru"].lost, lost


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_recording_that_fails_never_reaches_the_application(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manager = MemoryManager(clock=FakeClock(0.0))

    @managed_store(manager=manager, name="jobs")
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    jobs = Jobs()
    recorder = manager.record(tmp_path / "t.trace")
    key = _BadRepr()
    jobs[key] = {"status": "done", "result": "x"}  # the write works, the recording stops
    assert jobs[key]["result"] == "x"
    assert recorder.closed
    assert "trace recording to" in caplog.text and "no repr" in caplog.text
    recorder.close()


def test_stress_record_needs_a_guarded_run(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["stress", "--no-guard", "--record", str(tmp_path / "t.trace")])
    assert code == 2
    assert "--record needs a guarded run" in capsys.readouterr().err
    assert not (tmp_path / "t.trace").exists()
