"""The package's layers (DESIGN section 1): each module imports only from its own layer or
those below it, at run time and inside functions alike, and no imports go round in a cycle.

Imports under ``if TYPE_CHECKING:`` (hints only) are the one exception. The imports are read
from the source with `ast`, so a deferred import inside a function counts like any other. A
new module must be given its layer here: that is the decision this test asks for.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "memguard"

LAYERS: dict[str, int] = {
    # 0 basics and memory
    "memguard.errors": 0, "memguard.policy.units": 0, "memguard.index.estimate": 0, "memguard.monitor.levels": 0,
    "memguard._logging": 0, "memguard.memory": 0, "memguard._version": 0,
    "memguard.monitor.daemon": 0,
    # 1 events, index, policy options, the TOML line scanner
    "memguard.eviction.events": 1, "memguard.index.job_index": 1, "memguard.policy.options": 1,
    "memguard.policy.provenance": 1, "memguard.index.orders": 1, "memguard.index.activity": 1,
    "memguard.index.sizes": 1,
    # 2 rules and the `|` composite; the TOML policy and its loader
    "memguard.eviction.rules": 2, "memguard.policy": 2,
    # 3 the eviction runner and a store's eviction plan
    "memguard.eviction.runner": 3, "memguard.eviction.plan": 3,
    # 4 stores
    "memguard.stores.registry": 4, "memguard.stores.handle": 4, "memguard.stores.managed": 4, "memguard.stores.touches": 4,
    "memguard.stores.protocol": 4,
    # 5 engine
    "memguard.monitor.readings": 5, "memguard.monitor.controller": 5, "memguard.monitor.levels": 5, "memguard.monitor.triggers": 5,
    "memguard.monitor.daemon": 5, "memguard.monitor.readings": 5, "memguard.monitor": 5, "memguard.monitor.triggers": 5,
    "memguard.monitor.triggers": 5, "memguard.stores.trace": 5, "memguard.monitor.tick": 5, "memguard.monitor.controller": 5,
    "memguard.monitor.daemon": 5, "memguard.monitor.tick": 5,
    "memguard.manager": 5,
    # 6 surfaces
    "memguard.web": 6, "memguard.web.dashboard": 6, "memguard.testing": 6, "memguard.web.prometheus": 6,
    "memguard.integrations": 6, "memguard.redis": 6,
    # 7 tools; the package itself re-exports from below and is imported by tools only
    "memguard.tools.cli": 7, "memguard.tools.cli.views": 7, "memguard.tools.stress": 7, "memguard.tools.demo": 7,
    "memguard.tools.tune": 7, "memguard": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The layer of `module`: its own entry, else that of its package (memguard.redis.x)."""
    name = module
    while name not in LAYERS:
        if "." not in name:
            raise KeyError(module)
        name = name.rsplit(".", 1)[0]
    return LAYERS[name]


def is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


class Imports(ast.NodeVisitor):
    """The memguard modules a source file imports at run time (TYPE_CHECKING blocks skipped)."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.update(alias.name for alias in node.names
                          if alias.name.split(".")[0] == "memguard")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            package = self.module.split(".")
            base = ".".join(package[: len(package) - node.level] + ([base] if base else []))
        if base.split(".")[0] != "memguard":
            return
        submodules = [f"{base}.{alias.name}" for alias in node.names
                      if is_module(f"{base}.{alias.name}")]
        self.found.update(submodules or [base])


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        visitor = Imports(module)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        edges[module] = visitor.found - {module}
    return edges


def test_every_module_has_a_layer() -> None:
    unknown = []
    for module in graph():
        try:
            layer_of(module)
        except KeyError:
            unknown.append(module)
    assert not unknown, f"give these modules a layer in tests/test_layers.py: {unknown}"


@pytest.mark.parametrize("module", sorted(graph()))
def test_imports_go_down_the_layers(module: str) -> None:
    mine = layer_of(module)
    upward = sorted(dep for dep in graph()[module]
                    if not dep.startswith(module + ".") and layer_of(dep) > mine)
    assert not upward, (f"{module} (layer {mine}) imports from above: "
                        + ", ".join(f"{dep} (layer {layer_of(dep)})" for dep in upward))


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges or nxt.startswith(node + "."):
                continue  # a package importing its own submodules is how it re-exports
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_check_sees_deferred_and_relative_imports(tmp_path: Path) -> None:
    source = ("def later():\n    from memguard.manager import manager\n"
              "from . import levels\n")
    visitor = Imports("memguard.stores.managed")
    visitor.visit(ast.parse(source))
    assert visitor.found == {"memguard.manager", "memguard.monitor.levels"}
