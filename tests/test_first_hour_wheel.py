"""The first hour from the user's side: the wheel, installed in a fresh venv outside the
repository, under the distribution name of its own, deployed as docs/integrations.md's
Heroku section says (the Procfile line, a bundled policy by name) with nothing but the
installed package: gunicorn serves /health, and a policy path copied from a checkout stops
the worker with an error naming the bundled policies."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import site
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

APP = '''\
from flask import Flask
import memguard
from memguard import managed_store

@managed_store(name="diagram", max_jobs=5)
class DiagramJobs(dict):
    pass

jobs = DiagramJobs()
app = Flask(__name__)
memguard.integrations.flask.init_app(app)


@app.get("/where")
def where():
    return {"memguard": memguard.__file__, "policy": memguard.manager.policy.source}
'''


def pyproject_version() -> str:
    """The version written once, in memguard/_version.py (pyproject: dynamic)."""
    text = (ROOT / "memguard" / "_version.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    assert match is not None
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(out), str(ROOT)], capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stderr
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the repository holding the wheel; its dependencies (attrs,
    psutil, wrapt, flask, gunicorn...) come from this test's environment through a path
    entry, which adds that directory to sys.path after the venv's own site-packages and
    does not run its .pth files (so this checkout's editable install stays out)."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    assert ROOT not in where.parents
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True,
                   timeout=120)
    python = where / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    own = subprocess.run([str(python), "-c", purelib], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    (Path(own) / "deps-from-the-test-env.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "--no-deps", "--no-index", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    return where


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No PYTHONPATH, no MEMGUARD_* or GUNICORN* of the test run: only what a dyno has."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


def run_python(venv: Path, code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path,
                          env=clean_env(tmp_path), capture_output=True, text=True, timeout=120)


def test_the_wheel_carries_its_own_distribution_name(wheel: Path) -> None:
    assert wheel.name.startswith(f"memguard_jobs-{pyproject_version()}-")
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
        names = archive.namelist()
    assert re.search(r"^Name: memguard-jobs$", text, re.M)
    assert "Provides-Extra: flask" in text
    assert "Project-URL" not in text  # no placeholder URLs
    assert "memguard/__init__.py" in names and "memguard/_policies/small-dyno.toml" in names


def test_installed_it_imports_as_memguard_and_knows_its_version(venv: Path,
                                                                tmp_path: Path) -> None:
    code = ("import importlib.metadata as m, memguard\n"
            "print(memguard.__file__)\n"
            "print(memguard.__version__, m.version('memguard-jobs'))\n")
    result = run_python(venv, code, tmp_path)
    assert result.returncode == 0, result.stderr
    where, version, metadata_version = result.stdout.split()
    assert Path(where).is_relative_to(venv)
    assert version == metadata_version == pyproject_version()


def test_a_missing_extra_names_the_distribution_to_install(venv: Path, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['django'] = None\n"
            "import memguard\n"
            "try:\n"
            "    memguard.integrations.django\n"
            "except ImportError as error:\n"
            "    print(error)\n")
    result = run_python(venv, code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pip install 'memguard-jobs[django]'" in result.stdout


def procfile_argv(venv: Path, port: int) -> list[str]:
    """docs/integrations.md's Procfile line, run as Heroku would, on loopback."""
    text = (ROOT / "docs" / "integrations.md").read_text()
    match = re.search(r"^web: (.+)$", text, re.MULTILINE)
    assert match is not None
    argv = shlex.split(match.group(1).replace("$PORT", str(port))
                       .replace("0.0.0.0", "127.0.0.1"))
    assert argv[0] == "gunicorn" and argv[-1] == "app:app"
    assert "python:memguard.integrations.gunicorn" in argv  # hooks from the package
    return [str(venv / "bin" / "python"), "-m", "gunicorn", *argv[1:]]


def documented_policy() -> str:
    text = (ROOT / "docs" / "integrations.md").read_text()
    match = re.search(r"MEMGUARD_POLICY=(\S+)", text)
    assert match is not None
    return match.group(1)


@contextlib.contextmanager
def gunicorn(venv: Path, app_dir: Path, env: dict[str, str], port: int,
             log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(procfile_argv(venv, port), cwd=app_dir, env=env,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(timeout=10)


def get_json(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_heroku_guide_serves_health_from_the_installed_wheel(venv: Path,
                                                                 tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(APP)
    policy = documented_policy()
    assert policy == "small-dyno"  # a bundled name, not a path into a checkout
    port = free_port()
    env = clean_env(tmp_path, PORT=str(port), WEB_CONCURRENCY="2", MEMGUARD_POLICY=policy)
    log = tmp_path / "gunicorn.log"
    with gunicorn(venv, app_dir, env, port, log) as process:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                status, health = get_json(f"http://127.0.0.1:{port}/health")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert status == 200, health
        assert health["status"] in ("pass", "warn"), health
        # The monitor runs in the worker that answered (started by the post_fork hook) ...
        _, live = get_json(f"http://127.0.0.1:{port}/health/live")
        assert live["status"] == "pass", live
        # ... with the wheel's memguard and the bundled policy the environment named.
        _, where = get_json(f"http://127.0.0.1:{port}/where")
        assert Path(str(where["memguard"])).is_relative_to(venv), where
        assert Path(str(where["policy"])).is_relative_to(venv), where
        assert str(where["policy"]).endswith("memguard/_policies/small-dyno.toml"), where
        _, memory = get_json(f"http://127.0.0.1:{port}/memory")
        assert memory["thresholds"]["emergency"] == 400 * 2**20, memory  # small-dyno's


def test_a_policy_path_from_a_checkout_names_the_bundled_policies(venv: Path,
                                                                  tmp_path: Path) -> None:
    """``MEMGUARD_POLICY=policies/small-dyno.toml`` (a file only a checkout holds): the worker
    does not boot, gunicorn exits, and the log says what to write instead."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(APP)
    port = free_port()
    env = clean_env(tmp_path, PORT=str(port), WEB_CONCURRENCY="1",
                    MEMGUARD_POLICY="policies/small-dyno.toml")
    log = tmp_path / "gunicorn.log"
    with gunicorn(venv, app_dir, env, port, log) as process:
        code = process.wait(timeout=60)
    text = log.read_text()
    assert code != 0, text
    assert "no policy file at 'policies/small-dyno.toml'" in text, text
    assert "bundled policy: container, default, small-dyno" in text, text
    assert 'did you mean "small-dyno"?' in text, text
