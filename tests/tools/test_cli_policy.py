"""`memguard policy check|show`, run as a user runs it: a subprocess with its own environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from memguard.policy.files import load_policy
from memguard.policy.options import ENVIRONMENT_KNOBS
from memguard.tools.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = "policies/default.toml"
MB = 1024**2


def memguard(*args: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m memguard.tools.cli ARGS` from the repository root with `env` on top of a
    clean copy of this environment (no memguard knobs)."""
    environ = {key: value for key, value in os.environ.items() if key not in ENVIRONMENT_KNOBS}
    environ.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "memguard.tools.cli", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr
    return result


def show_json(*args: str, env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    result = memguard("policy", "show", *args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


# -- check --------------------------------------------------------------------------------------


def test_check_every_ready_policy() -> None:
    files = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "policies").glob("*.toml"))
    result = memguard("policy", "check", *files)
    assert result.returncode == 0, result.stderr
    counts = [len(load_policy(ROOT / file, environ={}).stores) for file in files]
    assert result.stdout.splitlines() == [
        f"{file}: ok ({count} store{'' if count == 1 else 's'})"
        for file, count in zip(files, counts)
    ]


def test_check_reports_one_line_per_invalid_file_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[stores.diagram]\nmax_age = "20 minutes"\n')
    typo = tmp_path / "typo.toml"
    typo.write_text('[memroy]\nlimit = "1GB"\n')
    result = memguard("policy", "check", DEFAULT, str(bad), str(typo))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{DEFAULT}: ok (6 stores)"]
    errors = result.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"{bad}:2: stores.diagram.max_age: ")
    assert '"20 minutes"' in errors[0] and '"1h30m"' in errors[0]
    assert errors[1].startswith(f"{typo}:1: memroy: ")
    assert 'did you mean "memory"?' in errors[1]


def test_check_ignores_the_environment() -> None:
    result = memguard("policy", "check", DEFAULT, env={"MAX_JOBS_PER_STORE": "zero"})
    assert result.returncode == 0


def test_check_missing_file_exits_1() -> None:
    result = memguard("policy", "check", "no/such/policy.toml")
    assert result.returncode == 1
    assert result.stderr.startswith("no/such/policy.toml: cannot read the policy")


@pytest.mark.parametrize(
    "args",
    [
        ["policy", "check"],
        ["policy", "check", "--strict", DEFAULT],
        ["policy"],
        ["policy", "explain", DEFAULT],
        [],
        ["policy", "show", DEFAULT, "extra.toml"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = memguard(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_help_exits_0() -> None:
    result = memguard("policy", "show", "--help")
    assert result.returncode == 0
    assert "--store" in result.stdout


# -- show ---------------------------------------------------------------------------------------


def test_show_names_where_each_value_came_from() -> None:
    report = show_json(DEFAULT)
    assert report["source"] == DEFAULT
    diagram = report["stores"]["diagram"]
    assert diagram["max_age"] == {"value": 1200.0, "source": f"{DEFAULT}:32"}
    assert diagram["max_jobs"] == {"value": 50, "source": f"{DEFAULT}:33"}
    assert diagram["max_idle"] == {"value": None, "source": "built-in"}
    assert diagram["release"] == {"value": ["result"], "source": f"{DEFAULT}:26"}
    assert report["stores"]["*"]["max_age"] == {"value": 1800.0, "source": f"{DEFAULT}:23"}
    memory = report["memory"]
    assert memory["warning"] == {"value": 400 * MB, "source": f"{DEFAULT}:13"}
    assert memory["critical"] == {"value": 600 * MB, "source": f"{DEFAULT}:17"}
    assert memory["cooldown"] == {"value": 30.0, "source": "built-in"}
    assert memory["rules"]["value"] == ["age", "idle", "count", "bytes", "emergency"]


def test_show_applies_environment_overrides_with_provenance() -> None:
    env = {
        "JOB_RETENTION_MINUTES": "15",
        "MAX_JOBS_PER_STORE": "9",
        "MEMGUARD_MEMORY_LIMIT": "1GB",
        "MEMGUARD_CHECK_INTERVAL": "45s",
    }
    report = show_json(DEFAULT, env=env)
    for name, store in report["stores"].items():
        assert store["max_age"] == {"value": 900.0, "source": "env JOB_RETENTION_MINUTES"}, name
        assert store["max_jobs"] == {"value": 9, "source": "env MAX_JOBS_PER_STORE"}, name
    memory = report["memory"]
    assert memory["limit"] == {"value": 1024 * MB, "source": "env MEMGUARD_MEMORY_LIMIT"}
    assert memory["check_interval"] == {"value": 45.0, "source": "env MEMGUARD_CHECK_INTERVAL"}
    assert memory["warning"]["source"] == f"{DEFAULT}:13"
    ignored = show_json(DEFAULT, "--no-env", env=env)
    assert ignored["stores"]["diagram"]["max_age"]["source"] == f"{DEFAULT}:32"


def test_show_without_a_file_uses_memguard_policy(tmp_path: Path) -> None:
    policy = tmp_path / "mine.toml"
    policy.write_text('[memory]\nlimit = "2GB"\nwarning = "50%"\n\n[stores.iac]\nmax_jobs = 4\n')
    report = show_json(env={"MEMGUARD_POLICY": str(policy), "MAX_JOBS_PER_STORE": "3"})
    assert report["source"] == str(policy)
    assert report["memory"]["warning"] == {
        "value": "50%",
        "source": f"{policy}:3",
        "bytes": 1024 * MB,
    }
    assert report["stores"]["iac"]["max_jobs"] == {"value": 3, "source": "env MAX_JOBS_PER_STORE"}
    built_in = show_json()
    assert built_in["source"] == "<built-in>"
    assert built_in["memory"]["warning"] == {"value": "75%", "source": "built-in"}


def test_show_one_store_in_a_table() -> None:
    result = memguard("policy", "show", DEFAULT, "--store", "iac", env={"MAX_JOBS_PER_STORE": "8"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"policy: {DEFAULT}"
    assert "[stores.iac]" in lines
    assert "[stores.diagram]" not in lines
    iac = lines[lines.index("[stores.iac]") :]
    assert any(line.split() == ["max_age", "30m", f"{DEFAULT}:36"] for line in iac)
    assert any(line.split() == ["max_jobs", "8", "env", "MAX_JOBS_PER_STORE"] for line in iac)
    assert any(line.split() == ["warning", "400.0MB", f"{DEFAULT}:13"] for line in lines)


def test_show_a_bundled_policy_by_name() -> None:
    report = show_json("container", "--no-env", "--store", "anything")
    assert report["source"].endswith("container.toml")
    assert report["memory"]["warning"]["value"] == "75%"
    assert set(report["stores"]) == {"anything", "*"}


def test_show_reports_a_bad_environment_in_one_line() -> None:
    result = memguard("policy", "show", DEFAULT, env={"JOB_RETENTION_MINUTES": "soon"})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "memguard: environment: JOB_RETENTION_MINUTES: expected a number of minutes above zero "
        "such as 20; got \"soon\""
    ]


# -- in process (fast, and the same entry point) ------------------------------------------------


def test_main_returns_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[pipeline]\nrules = ['age', 'idel']\n")
    assert main(["policy", "check", str(ROOT / DEFAULT)]) == 0
    assert main(["policy", "check", str(bad)]) == 1
    assert main(["policy", "check"]) == 2
    captured = capsys.readouterr()
    assert f"{bad}:2: pipeline.rules: " in captured.err
    assert 'did you mean "idle"?' in captured.err
