"""`memguard tune` checks its own recommendation (issue 21): replayed four times as long with
the emergency rule modelled, a pick must never need the rule and must leave the hysteresis
margin under `emergency`; one that does not is not recommended."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from memguard.tools import tune

MB = 1024 * 1024


def write_trace(path: Path, *, minutes: int = 60, size: int = MB, back_after: float = 2400.0,
                base: int = 100 * MB) -> Path:
    """One store; a job a minute, finished with `size` bytes 30 s after it was stored, read
    1 s after that (its delivery) and again `back_after` seconds later (a client back)."""
    lines = [json.dumps({"memguard_trace": 1, "base": base, "check_interval": 60.0}),
             json.dumps(["s", 0, "jobs"])]
    events = []
    for n in range(minutes):
        t, key = 60.0 * n, f"{n:016x}"
        events += [(t, ["i", t, 0, key, None]), (t + 30, ["w", t + 30, 0, key, size]),
                   (t + 31, ["r", t + 31, 0, key]),
                   (t + 31 + back_after, ["r", t + 31 + back_after, 0, key])]
    events.sort(key=lambda e: e[0])
    lines += [json.dumps(record) for _, record in events]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_emergency_rule_modelled_cuts_usage_back_to_its_target(tmp_path: Path) -> None:
    trace = tune.read_trace(write_trace(tmp_path / "t.trace"))
    unbounded = {"jobs": tune.Bounds()}
    alone = tune.replay(trace, unbounded)
    assert alone.peak == 160 * MB and alone.lost == 0
    rule = tune.EmergencyModel(threshold=140 * MB, target=120 * MB)
    checked = tune.replay_checked(trace, unbounded, rule)
    assert checked.emergencies >= 2
    assert checked.outcome.peak == 140 * MB  # reached, then cut back
    assert checked.outcome.lost > 0  # the rule took results that clients came back for
    longer = tune.replay_checked(trace, unbounded, tune.EmergencyModel(10**12, 10**11), times=4)
    assert longer.outcome.peak == 100 * MB + 4 * 60 * MB  # nothing bounds the store
    assert longer.outcome.wanted == 4 * alone.wanted and longer.emergencies == 0


def test_a_pick_that_would_need_the_emergency_rule_is_not_recommended(tmp_path: Path) -> None:
    trace = tune.read_trace(write_trace(tmp_path / "t.trace"))
    grids = {"jobs_grid": (None,), "age_grid": (1800.0, None)}
    unchecked = tune.tune(trace, 200 * MB, **grids)  # type: ignore[arg-type]
    assert unchecked.best is not None
    assert unchecked.best.bounds["jobs"].max_age is None  # 0 lost, 160MB: fits an hour
    rule = tune.EmergencyModel(threshold=200 * MB, target=160 * MB)
    checked = tune.tune(trace, 200 * MB, emergency=rule, **grids)  # type: ignore[arg-type]
    assert checked.best is not None and checked.check is not None
    assert checked.best.bounds["jobs"].max_age == 1800.0
    assert checked.check.emergencies == 0
    assert checked.check.outcome.peak <= tune.emergency_ceiling(rule) == 190 * MB
    assert [row.bounds["jobs"].max_age for row, _ in checked.rejected] == [None] * len(
        checked.rejected) and checked.rejected
    text = tune.table(checked)
    assert "rejected tuned" in text and "checked " in text and "4x as long" in text
    data = tune.to_json(checked)
    assert data["check"]["ceiling"] == 190 * MB
    assert data["check"]["recommended"]["emergencies"] == 0
    assert data["check"]["rejected"][0]["emergencies"] > 0


def test_nothing_is_recommended_when_no_pick_passes_the_check(tmp_path: Path) -> None:
    trace = tune.read_trace(write_trace(tmp_path / "t.trace"))
    rule = tune.EmergencyModel(threshold=200 * MB, target=160 * MB)
    result = tune.tune(trace, 200 * MB, emergency=rule, jobs_grid=(None,), age_grid=(None,))
    assert result.best is None and result.rejected
    assert "no candidate passes the self-check" in tune.table(result)


def test_the_command_prints_the_check_and_refuses_a_failing_pick(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "t.trace", base=380 * MB)
    done = subprocess.run(
        [sys.executable, "-m", "memguard.tools.cli", "tune", str(path), "--limit", "512MB",
         "--jobs", "none", "--ages", "none", "--json", str(tmp_path / "t.json")],
        capture_output=True, text=True, timeout=120)
    # 380MB + an hour of results fits under emergency (500MB); four hours would not
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no candidate passes the self-check" in done.stdout
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["recommended"] is None and data["check"]["ceiling"] == int(500 * MB * 0.95)
