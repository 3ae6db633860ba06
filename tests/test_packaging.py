"""The package as a user gets it: version, CLI --version, bundled policies by name, the
integrations reachable after ``import memguard``, missing extras, and README's example run
from a built wheel in a directory outside the repository."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import memguard
from memguard import MemoryManager, PolicyError, load_policy
from memguard.errors import MissingExtraError
from memguard.policy.files import bundled_policy, bundled_policy_names
from memguard.tools.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def pyproject_version() -> str:
    """The version the build writes into the metadata: read from the file pyproject names."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    path = re.search(r'^\[tool\.hatch\.version\]\npath = "([^"]+)"', pyproject, re.M)
    assert path is not None and re.search(r'^dynamic = \["version"\]', pyproject, re.M)
    match = re.search(r'^__version__ = "([^"]+)"', (ROOT / path.group(1)).read_text(), re.M)
    assert match is not None
    return match.group(1)


def test_version_is_the_installed_metadata() -> None:
    from importlib.metadata import version

    assert memguard.__version__ == pyproject_version() == version("memguard-jobs")
    assert "__version__" in memguard.__all__


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"memguard {pyproject_version()}"


@pytest.mark.parametrize("name", bundled_policy_names())
def test_bundled_policies_load_by_name(name: str) -> None:
    policy = load_policy(name)
    assert policy.source == str(bundled_policy(name))
    assert policy == load_policy(bundled_policy(name))
    manager = MemoryManager()
    assert manager.load_policy(name).source == policy.source


def test_bundled_names_include_the_seed_default() -> None:
    assert {"default", "small-dyno", "container"} <= set(bundled_policy_names())
    assert load_policy("default").stores["diagram"]["max_jobs"] == 50


def test_an_unknown_bare_name_lists_the_bundled_policies() -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy("defualt")
    message = str(caught.value)
    assert "'defualt' is neither a policy file nor a bundled policy" in message
    assert "default, small-dyno" in message and 'did you mean "default"' in message


def test_integrations_are_reachable_after_a_plain_import() -> None:
    script = ("import sys, memguard\n"
              "assert 'flask' not in sys.modules and 'fastapi' not in sys.modules\n"
              "print(memguard.integrations.flask.init_app.__name__,\n"
              "      memguard.integrations.fastapi.router.__name__,\n"
              "      memguard.integrations.gunicorn.post_fork.__name__)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["init_app", "router", "post_fork"]


def test_unknown_integration_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'bottle'"):
        memguard.integrations.bottle  # noqa: B018


@pytest.mark.parametrize(("integration", "blocked", "extra"), [
    ("flask", "flask", "flask"),
    ("fastapi", "fastapi", "fastapi"),
    ("fastapi", "starlette", "fastapi"),
    ("django", "django", "django"),
])
def test_a_missing_extra_names_the_pip_install(integration: str, blocked: str,
                                               extra: str) -> None:
    """The framework made unimportable (None in sys.modules: a real ImportError)."""
    script = (f"import sys; sys.modules[{blocked!r}] = None\n"
              "import memguard\n"
              "from memguard.errors import MissingExtraError\n"
              "try:\n"
              f"    memguard.integrations.{integration}\n"
              "except MissingExtraError as error:\n"
              "    assert isinstance(error, ImportError)\n"
              "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert f"pip install 'memguard-jobs[{extra}]'" in result.stdout
    assert f"memguard.integrations.{integration} needs '{blocked}'" in result.stdout
    assert issubclass(MissingExtraError, ImportError)


def readme_example() -> str:
    example = (ROOT / "README.md").read_text().split("## Example", 1)[1]
    code = re.search(r"```python\n(.*?)```", example, re.S)
    assert code is not None
    return code.group(1)


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """memguard built as a wheel and installed (without dependencies: those of this venv
    serve) into a target directory outside the repository."""
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(out), str(ROOT)], capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = out.glob("memguard_jobs-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "memguard/_policies/default.toml" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    site = tmp_path_factory.mktemp("site")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                              "--target", str(site), str(wheel)], capture_output=True,
                             text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    return site


@pytest.mark.slow
def test_readme_example_runs_from_an_installed_wheel_outside_the_repo(
        wheel_site: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "app"
    workdir.mkdir()
    assert ROOT not in workdir.parents
    script = readme_example() + (
        "\nfrom memguard import handle\n"
        "diagram_jobs['a'] = {'status': 'done', 'result': 'x'}\n"
        "assert handle(diagram_jobs).policy.max_jobs == 50\n"
        "assert memguard.manager.policy.source.endswith('default.toml')\n"
        "assert memguard.manager.monitor.running\n"
        "from flask import Flask\n"
        "app = Flask('readme')\n"
        "memguard.integrations.flask.init_app(app)   # README: 'In Flask: ...'\n"
        "assert app.test_client().get('/health').status_code == 200\n"
        "memguard.manager.stop()\n"
        "print(memguard.__file__)\n"
        "print(memguard.__version__)\n"
    )
    (workdir / "example.py").write_text(script)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(wheel_site), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "example.py"], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    where, version = result.stdout.split()
    assert Path(where).is_relative_to(wheel_site)  # the wheel's copy, not the source tree
    assert version == pyproject_version()
