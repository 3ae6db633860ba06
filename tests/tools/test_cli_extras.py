"""The optional extras as a user installs them: `cli` is light (rich only), plotting is its
own `plot` extra, `--plot` without matplotlib names that extra, and every package an extra
lists is imported by something that extra serves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
#: matplotlib made absent the way the import system itself reports a missing module: a None
#: entry in sys.modules makes `import matplotlib` raise ImportError and `find_spec` answer None.
WITHOUT_MATPLOTLIB = "import sys; sys.modules['matplotlib'] = None\n"


def _extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    return extras


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=\[; ]", requirement, maxsplit=1)[0].lower()
            for requirement in requirements}


def _imported_by(package: str, *folders: str) -> list[Path]:
    pattern = re.compile(rf"^\s*(import|from) {re.escape(package)}\b", re.MULTILINE)
    return [path for folder in folders for path in (ROOT / folder).rglob("*.py")
            if pattern.search(path.read_text(encoding="utf-8"))]


def test_the_cli_extra_is_rich_only_and_plotting_has_its_own_extra() -> None:
    extras = _extras()
    assert _names(extras["cli"]) == {"rich"}
    assert _names(extras["plot"]) == {"matplotlib"}
    assert "plot" in extras["dev"][0]  # the developers' install keeps the plot tests running


def test_every_package_of_the_runtime_extras_is_imported_by_memguard() -> None:
    """Each package `cli`, `plot`, `metrics` and `redis` install is imported by memguard
    itself: nothing listed that nothing uses (httpx sat in `cli` with no importer)."""
    extras = _extras()
    unused = sorted(name for extra in ("cli", "plot", "metrics", "redis")
                    for name in _names(extras[extra])
                    if not _imported_by(name.replace("-", "_"), "memguard"))
    assert unused == []
    bench = _names(extras["bench"])
    assert all(_imported_by(name, "benchmarks") for name in bench), bench


def _memguard(*args: str, before: str = "") -> subprocess.CompletedProcess[str]:
    code = (before + "import sys\nfrom memguard.tools.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_plot_without_matplotlib_names_the_plot_extra(tmp_path: Path) -> None:
    done = _memguard("stress", "--minutes", "1", "--plot", str(tmp_path / "chart.png"),
                     before=WITHOUT_MATPLOTLIB)
    assert done.returncode == 2, done.stderr
    assert "pip install 'memguard-jobs[plot]'" in done.stderr
    assert not (tmp_path / "chart.png").exists()


def test_demo_plot_without_matplotlib_names_the_plot_extra(tmp_path: Path) -> None:
    code = (WITHOUT_MATPLOTLIB + "from memguard.tools.demo import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", code, "--minutes", "1", "--plot",
                           str(tmp_path / "demo.png")], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert "pip install 'memguard-jobs[plot]'" in done.stderr, done.stderr
    assert not (tmp_path / "demo.png").exists()
