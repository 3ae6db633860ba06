"""``python -m benchmarks.structure [TREE]``: the shape of the package, in figures.

Prints what docs/architecture.md quotes: how many modules, the largest modules and units, the
longest chain of imports (hints and deferred imports included), and the files an evicting
insert and an emergency tick cross, with the calls they make (traced with `sys.setprofile`).
`TREE` (default: this checkout) is the root of a memguard source tree, so an older checkout
can be measured the same way for a before/after; the call traces use only the public API.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules(tree: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of `tree`/memguard."""
    found = {}
    for path in sorted((tree / "memguard").rglob("*.py")):
        parts = path.relative_to(tree).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def layout(tree: Path) -> dict[str, object]:
    """Module counts, the largest modules and units, and the longest import chain."""
    known = modules(tree)
    edges = {name: {dep for dep in _imports(name, path, known)
                    if dep in known and dep != name and not dep.startswith(name + ".")}
             for name, path in known.items()}
    sizes = sorted(((len(path.read_text().splitlines()), name) for name, path in known.items()),
                   reverse=True)
    units = []
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                assert node.end_lineno is not None
                units.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    depth: dict[str, int] = {}
    on_path: set[str] = set()

    def chain(name: str) -> int:  # longest chain below `name`; a cycle is cut where it closes
        if name not in depth:
            if name in on_path:
                return 0
            on_path.add(name)
            depth[name] = 1 + max((chain(dep) for dep in edges[name]), default=0)
            on_path.discard(name)
        return depth[name]

    top = [entry for entry in (tree / "memguard").iterdir()
           if entry.suffix == ".py" or (entry / "__init__.py").exists()]
    return {"modules": len(known), "top_level_entries": len(top),
            "largest_modules": sizes[:5], "largest_units": sorted(units, reverse=True)[:5],
            "import_levels": max(chain(name) for name in known)}


CROSSINGS = textwrap.dedent("""
    import json, os, sys
    import memguard
    from memguard import MemoryManager, Policy, managed_store
    from memguard.testing import FakeClock, FakeProbe

    PACKAGE = os.path.dirname(memguard.__file__)

    def trace(step):
        calls = []
        def profile(frame, event, arg):
            if event == "call" and frame.f_code.co_filename.startswith(PACKAGE):
                where = os.path.relpath(frame.f_code.co_filename, os.path.dirname(PACKAGE))
                calls.append((where, frame.f_code.co_name))
        sys.setprofile(profile)
        try:
            step()
        finally:
            sys.setprofile(None)
        files = list(dict.fromkeys(where for where, _ in calls))
        return {"calls": len(calls), "functions": len(set(calls)), "files": files}

    def no_reclaim(*, full=True):  # the emergency's gc would measure this script, not memguard
        from memguard.testing import FakeReclaim
        return FakeReclaim()(full=full)

    policy = Policy.from_toml('[memory]\\nlimit = "512MB"\\nwarning = "400MB"\\n'
                              'emergency = "450MB"\\nemergency_target = "350MB"\\n'
                              'critical = "600MB"\\n')
    probe = FakeProbe("300MB", limit="512MB")
    try:
        manager = MemoryManager(policy, clock=FakeClock(), probe=probe, reclaim=no_reclaim)
    except TypeError:  # a tree from before the reclaim was injected
        manager = MemoryManager(policy, clock=FakeClock(), probe=probe)

    @managed_store(name="jobs", max_jobs=100, manager=manager)
    class Jobs(dict):
        pass

    store = Jobs()
    for i in range(101):
        store[f"j{i}"] = {"status": "done", "result": "x" * 1000}
    insert = trace(lambda: store.__setitem__("j101", {"status": "done", "result": "x" * 1000}))
    manager.setup_memory_monitoring()
    manager.monitor.tick()
    probe.set("470MB")
    emergency = trace(manager.monitor.tick)
    print(json.dumps({"insert": insert, "emergency_tick": emergency}))
""")


def crossings(tree: Path) -> dict[str, object]:
    """Files and calls of one evicting insert and one emergency tick, in a fresh interpreter
    that imports memguard from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", CROSSINGS], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tree, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main() -> None:
    tree = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT
    print(json.dumps({"tree": str(tree), **layout(tree), **crossings(tree)}, indent=1))


if __name__ == "__main__":
    main()
