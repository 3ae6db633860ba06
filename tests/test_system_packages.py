"""`.ci/system-packages`, the one script `make test` and `.ci/run` share: run as a user who
cannot install, it names in one line what to install and lets the run go on (exit 0)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from system_packages import jemalloc

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "system-packages"


def run_unprivileged(path: str) -> subprocess.CompletedProcess[str]:
    """The script with only `path` on PATH, as `nobody` when the tests run as root (so it can
    never reach apt-get here)."""
    argv = ["/bin/bash", str(SCRIPT)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux) to drop privileges")
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    return subprocess.run(argv, env={"PATH": path}, cwd="/", capture_output=True, text=True,
                          timeout=60, check=False)


def test_missing_packages_are_named_in_one_line(tmp_path: Path) -> None:
    result = run_unprivileged(str(tmp_path))  # an empty PATH: no chromium, no redis-server
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    wanted = "chromium chromium-driver redis-server" + ("" if jemalloc() else " libjemalloc2")
    assert len(lines) == 1 and lines[0].endswith(f"sudo apt-get install {wanted}"), lines


def test_nothing_is_said_when_everything_is_installed() -> None:
    commands = [shutil.which(name) for name in ("chromium", "chromedriver", "redis-server")]
    if None in commands or jemalloc() is None:
        pytest.skip("this machine lacks one of the packages: the case above covers it")
    path = os.pathsep.join(sorted({str(Path(c).parent) for c in commands if c} | {"/usr/bin"}))
    result = run_unprivileged(path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
