"""`memguard stress` and `python -m memguard.tools.demo`, run in subprocesses as users run them.

The verdict is about this process's real memory, so every run here is a fresh interpreter.
The configuration is the seed workload at a quarter of the result sizes against a 160 MB limit
(the default policy's thresholds scaled alike): the same shape as the default 512 MB run, in
about a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from memguard.tools.stress.results import StressResult

MB = 2**20
SMALL = ["--scale", "0.25", "--limit", "160MB", "--seed", "4"]
CLEAN_ENV = {key: value for key, value in os.environ.items() if not key.startswith("MEMGUARD_")}


def run(*args: str, timeout: float = 180,
        env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env={**CLEAN_ENV, **(env or {})})


def stress(*args: str) -> subprocess.CompletedProcess[str]:
    return run("-m", "memguard.tools.cli", "stress", *args)


def read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def assert_usage_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(("memguard stress: error: ", "memguard: error: "))
    for needle in needles:
        assert needle in last


# -- the verdict ---------------------------------------------------------------------------------


def test_guard_stays_under_the_limit_where_the_baseline_goes_over(tmp_path: Path) -> None:
    guarded = stress(*SMALL, "--json", str(tmp_path / "guarded.json"))
    baseline = stress(*SMALL, "--no-guard", "--json", str(tmp_path / "baseline.json"))
    g, b = read(tmp_path / "guarded.json"), read(tmp_path / "baseline.json")

    assert guarded.returncode == 0, guarded.stdout + guarded.stderr
    assert g["passed"] is True and g["guard"] is True
    assert g["limit"] == 160 * MB and g["peak_usage"] < 160 * MB
    assert g["jobs"]["active_lost"] == 0
    assert g["evictions"].get("count", 0) > 0
    assert g["time_at_level"]["critical"] == 0
    assert guarded.stdout.strip().splitlines()[-1].startswith("PASS guarded: peak ")

    assert baseline.returncode == 1
    assert b["passed"] is False and b["guard"] is False
    assert b["peak_usage"] > 160 * MB
    assert b["evictions"] == {} and b["jobs"]["held"] == b["jobs"]["submitted"]
    assert baseline.stdout.strip().splitlines()[-1].startswith(
        "FAIL baseline (no guard): peak ")

    # The same traffic: the seed fixes every job, whatever the guard does to them.
    for key in ("submitted", "completed", "failed"):
        assert g["jobs"][key] == b["jobs"][key]
    assert g["params"]["seed"] == b["params"]["seed"] == 4
    assert b["peak_usage"] > 1.4 * g["peak_usage"]


def test_json_is_the_full_result(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    assert stress(*SMALL, "--minutes", "20", "--json", str(out)).returncode == 0
    data = read(out)
    result = StressResult.from_dict(data)
    assert result.to_dict() == data
    assert set(data) >= {"peak_usage", "final_usage", "limit", "thresholds", "time_at_level",
                         "evictions", "evicted_bytes", "reclaimed_bytes", "cleanups", "jobs",
                         "samples", "params", "verdict", "wall_seconds", "results_lost",
                         "results_wanted", "lost_share", "marks"}
    assert data["results_lost"] == data["jobs"]["results_lost"] <= data["results_wanted"]
    assert data["lost_share"] == (data["results_lost"] / data["results_wanted"]
                                  if data["results_wanted"] else None)
    assert f"{data['results_lost']} of {data['results_wanted']} results lost" in data["verdict"]
    assert data["params"] == {**data["params"], "minutes": 20.0, "seed": 4, "scale": 0.25,
                              "limit": 160 * MB, "rate": 9.0}
    assert len(data["samples"]) == 20 * 6 + 1  # a sample every 10 simulated seconds
    # The default policy's 400/500/400/600 MB of a 512 MB limit, scaled to 160 MB.
    assert data["thresholds"] == {"warning": 125 * MB, "emergency": round(156.25 * MB),
                                  "emergency_target": 125 * MB, "critical": round(187.5 * MB)}


def test_json_to_stdout(tmp_path: Path) -> None:
    result = stress(*SMALL, "--minutes", "10", "--json", "-")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["params"]["minutes"] == 10.0
    assert result.stderr.strip().startswith("PASS guarded")


def test_table_and_chart() -> None:
    result = stress(*SMALL, "--minutes", "20")
    assert result.returncode == 0
    out = result.stdout
    for row in ("limit", "peak usage", "final usage", "time at ok", "time at warning",
                "time at emergency", "time at critical", "evictions", "evicted (estimate)",
                "emergency cleanups", "bytes reclaimed", "active jobs lost", "results lost",
                "jobs held at end", "came back, found result", "verdict"):
        assert row in out, row
    assert "memguard stress: guarded, 20 simulated minutes, 9 jobs/min, seed 4" in out
    assert "usage over time (guarded" in out
    assert "PASS" in out


def test_quiet_prints_only_the_verdict() -> None:
    result = stress(*SMALL, "--minutes", "10", "--quiet")
    assert result.returncode == 0
    assert result.stdout.strip().splitlines() == [result.stdout.strip()]
    assert result.stdout.startswith("PASS guarded: peak ")
    assert result.stderr == ""


def test_plot(tmp_path: Path) -> None:
    png = tmp_path / "usage.png"
    result = stress(*SMALL, "--minutes", "10", "--quiet", "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
    verdict, chart = result.stdout.strip().splitlines()
    assert verdict.startswith("PASS guarded: peak ") and chart == f"chart: {png}"


# Runs `memguard stress` in this interpreter and reports whether matplotlib got imported into
# it: the process that measures must never hold matplotlib, with or without --plot.
MEASURED = """
import json, sys
from memguard.tools.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "matplotlib": "matplotlib" in sys.modules}))
"""


def test_plot_never_changes_the_figures(tmp_path: Path) -> None:
    """--plot draws after the run in other processes: matplotlib never enters the measured
    process, and the measured figures agree with a run without --plot (the bug this guards
    against added ~30 MB to the start and the peak, every time)."""
    figures = {}
    for mode, extra in (("plain", []), ("plot", ["--plot", str(tmp_path / "chart.png")])):
        out = tmp_path / f"{mode}.json"
        result = run("-c", MEASURED, "stress", *SMALL, "--minutes", "20", "--quiet",
                     "--json", str(out), *extra)
        assert result.returncode == 0, result.stdout + result.stderr
        status = json.loads(result.stdout.strip().splitlines()[-1])
        assert status == {"code": 0, "matplotlib": False}, mode
        figures[mode] = read(out)
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plain, plot = figures["plain"], figures["plot"]
    assert abs(plain["start_usage"] - plot["start_usage"]) < 8 * MB, (plain["start_usage"],
                                                                        plot["start_usage"])
    assert abs(plain["peak_usage"] - plot["peak_usage"]) < 16 * MB, (plain["peak_usage"],
                                                                      plot["peak_usage"])
    # The traffic and what the guard did to it are the same too.
    for key in ("submitted", "completed", "results_wanted"):
        assert plain["jobs"][key] == plot["jobs"][key]


@pytest.mark.parametrize("argv", [
    [],
    ["--seed", "7", "--minutes", "12.5", "--scale", "0.3", "--rate", "4.5", "--limit", "1.5GB",
     "--policy", "default"],
])
def test_the_baseline_for_the_chart_runs_the_same_workload(argv: list[str]) -> None:
    """`--plot` runs the baseline with the options the guarded run was given."""
    from memguard.tools.cli.main import build_parser
    from memguard.tools.cli.stress import _stress_options

    parser = build_parser()
    args = parser.parse_args(["stress", *argv])
    again = parser.parse_args(["stress", *_stress_options(args)])
    for name in ("minutes", "seed", "scale", "rate", "limit", "policy"):
        assert getattr(again, name) == getattr(args, name), name


def test_plot_draws_from_saved_results(tmp_path: Path) -> None:
    """The drawing process on its own: from the JSON of a baseline run (no guarded curve)."""
    out = tmp_path / "baseline.json"
    stress(*SMALL, "--minutes", "5", "--no-guard", "--quiet", "--json", str(out))
    png = tmp_path / "baseline.png"
    drawn = run("-m", "memguard.tools.cli.stress_views", str(png), str(out))
    assert drawn.returncode == 0, drawn.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    broken = run("-m", "memguard.tools.cli.stress_views", str(tmp_path / "x.png"),
                 str(tmp_path / "no.json"))
    assert broken.returncode == 1 and "cannot draw" in broken.stderr
    assert not (tmp_path / "x.png").exists()


def test_verbose_shows_the_monitors_log(tmp_path: Path) -> None:
    policy = tmp_path / "pressure.toml"
    policy.write_text('[memory]\nscope = "process"\nlimit = "64MB"\nwarning = "1MB"\n'
                      'emergency = "2MB"\nemergency_target = "1MB"\ncritical = "3MB"\n')
    quiet = stress("--policy", str(policy), "--scale", "0.02", "--minutes", "10", "-q")
    loud = stress("--policy", str(policy), "--scale", "0.02", "--minutes", "10", "-q", "-v")
    assert quiet.stderr == ""
    assert "Memory level ok -> critical" in loud.stderr
    assert "[emergency: critical], freed ~" in loud.stderr
    assert quiet.returncode == loud.returncode == 0  # under 64MB, though always "critical"


def test_bundled_policy_by_name() -> None:
    result = stress("--policy", "small-dyno", "--scale", "0.25", "--minutes", "20", "-q")
    assert result.returncode == 0, result.stderr
    assert "of 512.0MB limit" in result.stdout


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "needle"), [
    (["--minutes", "abc"], "--minutes"),
    (["--minutes", "-5"], "--minutes"),
    (["--minutes", "0"], "--minutes"),
    (["--minutes", "inf"], "--minutes"),
    (["--seed", "1.5"], "--seed"),
    (["--rate", "0"], "--rate"),
    (["--scale", "none"], "--scale"),
    (["--limit", "12XB"], "--limit"),
    (["--limit", "0"], "--limit"),
    (["--plot", "/nonexistent/dir/usage.png"], "--plot"),
    (["--json", "/nonexistent/dir/result.json"], "--json"),
    (["--policy", "container"], "needs a memory limit"),
    (["--frobnicate"], "unrecognized arguments"),
])
def test_usage_errors(args: list[str], needle: str) -> None:
    assert_usage_error(stress(*args), needle)


def test_missing_policy_file() -> None:
    result = stress("--policy", "no-such-policy.toml")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "memguard: no-such-policy.toml: cannot read the policy: No such file or directory; "
        "expected a TOML policy file or the name of a bundled policy: container, default, "
        "small-dyno, soft")


def test_invalid_policy_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[memory]\nlimit = "512MB"\nwarning = "600MB"\n')
    result = stress("--policy", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.toml" in lines[0] and "warning" in lines[0]
    assert "Traceback" not in result.stderr


# -- the demo -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_runs_both_side_by_side_and_passes(tmp_path: Path) -> None:
    """README's demo command, with its defaults: the default policy and a 512 MB limit."""
    out = tmp_path / "demo.json"
    png = tmp_path / "demo.png"
    result = run("-m", "memguard.tools.demo", "--json", str(out), "--plot", str(png))
    assert result.returncode == 0, result.stdout + result.stderr
    data = read(out)
    guarded = StressResult.from_dict(data["guarded"])
    baseline = StressResult.from_dict(data["baseline"])
    assert guarded.limit == baseline.limit == 512 * MB
    assert guarded.passed and guarded.peak_usage < 512 * MB and guarded.active_lost == 0
    assert baseline.peak_usage > 512 * MB
    assert data["wall_seconds"] < 60
    assert "guarded" in result.stdout and "baseline (no guard)" in result.stdout
    *_, verdict, chart = result.stdout.strip().splitlines()
    assert verdict.startswith("PASS: memguard kept the process under its 512.0MB limit")
    assert f"{guarded.lost_text()}." in verdict  # the price in results, a first-class figure
    assert chart == f"chart: {png}" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_without_rich(tmp_path: Path) -> None:
    """A fresh virtualenv may lack the cli extra: the demo prints plain text instead."""
    code = ("import sys; sys.modules['rich'] = None\n"
            "from memguard.tools.demo import main\n"
            "sys.exit(main(sys.argv[1:]))")
    result = run("-c", code, "--minutes", "20", "--seed", "3")
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    assert "━" not in result.stdout and "│" not in result.stdout  # no rich box drawing
    lines = result.stdout.splitlines()
    assert any(line.startswith("peak usage") for line in lines)
    header = next(line for line in lines if line.lstrip().startswith("guarded"))
    assert "baseline (no guard)" in header
    assert lines[-1].startswith(("PASS: ", "FAIL: "))


def test_demo_usage_error() -> None:
    result = run("-m", "memguard.tools.demo", "--minutes", "-1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("--minutes must be above zero")


def test_chart_of_a_run_with_emergencies(tmp_path: Path) -> None:
    """The chart's every element at once: guarded and baseline curves, the baseline's first
    sample over the limit, emergency marks (drawn in this test process: nothing is measured)."""
    pytest.importorskip("matplotlib")
    import attrs

    from memguard.tools.cli.stress_views import plot_stress
    from memguard.tools.stress.config import StressConfig
    from memguard.tools.stress.results import Mark
    from memguard.tools.stress.run import run

    config = StressConfig(minutes=15, scale=0.05, limit=12 * MB)
    guarded = attrs.evolve(run(config), marks=(Mark(300.0, "emergency", 12, 3 * MB),
                                               Mark(420.0, "periodic", 4, None)))
    baseline = run(attrs.evolve(config, guard=False))
    assert not baseline.under_limit  # this pytest process is far over 12 MB
    png = tmp_path / "both.png"
    plot_stress([baseline, guarded], str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OSError):
        plot_stress([guarded], str(tmp_path / "missing" / "dir" / "x.png"))


def test_a_chart_that_cannot_be_written_fails_the_command(tmp_path: Path) -> None:
    """Never "chart: PATH" for a chart that was not written: a directory in the way -> exit 1."""
    target = tmp_path / "chart.png"
    target.mkdir()
    result = stress(*SMALL, "--minutes", "5", "--quiet", "--no-guard", "--plot", str(target))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "chart:" not in result.stdout
    assert f"--plot: could not draw {target}" in result.stderr.strip().splitlines()[-1]
