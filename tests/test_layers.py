"""The package's layers (DESIGN section 1): the folders are the layers, and a module imports only
from its own package or the packages below it, with no cycle of any kind.

Every import counts: at module level, deferred inside a function, relative, under
``if TYPE_CHECKING:`` (a hint is still a dependency a reader must follow), and
``importlib.import_module("memguard...")`` with a literal name. The imports are read from the
source with `ast`, each file parsed once per session. A new top-level module or folder fails
`test_every_module_has_a_layer` until it is given its place in `LAYERS`: that is the decision
this test asks for.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Optional

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "memguard"

# Bottom up. A unit is a top-level module or folder of memguard ("memguard" itself is the
# package's __init__). Units in one row form one layer and may import each other; the cycle
# check still keeps them from importing each other both ways.
LAYERS: list[tuple[str, ...]] = [
    ("memguard.errors", "memguard._version", "memguard._logging", "memguard._package"),
    ("memguard.index",),
    ("memguard.policy",),
    ("memguard.eviction",),
    ("memguard.memory",),
    ("memguard.stores",),
    ("memguard.monitor",),
    ("memguard.manager",),
    ("memguard.web",),
    ("memguard.integrations",),
    ("memguard.redis",),
    # The fakes sit under the tools: the stress workload runs on `testing.FakeClock`.
    ("memguard.testing",),
    ("memguard.tools",),
    ("memguard",),
]
RANK: dict[str, int] = {unit: rank for rank, row in enumerate(LAYERS) for unit in row}

# index/ sits under everything else: it may use only the error root and the logger.
INDEX_MAY_IMPORT = ("memguard.errors", "memguard._logging")


class Source(NamedTuple):
    """One parsed file of the package."""

    path: Path
    tree: ast.Module
    is_package: bool  # an __init__.py: its relative imports resolve against itself


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_names() -> list[str]:
    """Every module of the package, from the file names alone (cheap: used at collection)."""
    return sorted(module_name(path) for path in PACKAGE.rglob("*.py"))


def package_names() -> list[str]:
    return sorted(module_name(path) for path in PACKAGE.rglob("__init__.py"))


@functools.cache
def sources() -> dict[str, Source]:
    """Every file of the package, parsed once for the whole session."""
    return {module_name(path): Source(path, ast.parse(path.read_text(encoding="utf-8")),
                                      path.name == "__init__.py")
            for path in sorted(PACKAGE.rglob("*.py"))}


def is_module(name: str, root: Path = PACKAGE.parent) -> bool:
    path = root / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


class Imports(ast.NodeVisitor):
    """The memguard modules a source file imports, wherever the import statement sits."""

    def __init__(self, module: str, is_package: bool, root: Path = PACKAGE.parent) -> None:
        self.module = module
        self.is_package = is_package
        self.root = root
        self.found: set[str] = set()

    def visit_Import(self, node: ast.Import) -> None:
        self.found.update(alias.name for alias in node.names
                          if alias.name.split(".")[0] == "memguard")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: resolve against the package this file belongs to
            package = self.module.split(".")
            if not self.is_package:
                package = package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, *([base] if base else [])])
        if base.split(".")[0] != "memguard":
            return
        # `from memguard.x import y` depends on memguard.x.y when y is a module, else on memguard.x
        submodules = [f"{base}.{alias.name}" for alias in node.names
                      if is_module(f"{base}.{alias.name}", self.root)]
        self.found.update(submodules)
        if len(submodules) < len(node.names):
            self.found.add(base)

    def visit_Call(self, node: ast.Call) -> None:
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
        if (name in ("import_module", "__import__") and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                and node.args[0].value.split(".")[0] == "memguard"):
            self.found.add(node.args[0].value)
        self.generic_visit(node)


def imports_of(module: str, source: Source) -> set[str]:
    visitor = Imports(module, source.is_package)
    visitor.visit(source.tree)
    return visitor.found - {module}


@functools.cache
def graph() -> dict[str, frozenset[str]]:
    """Module -> the memguard modules it imports (an import of a package is an edge to its
    __init__, not to the submodules the __init__ happens to import)."""
    return {module: frozenset(imports_of(module, source)) for module, source in sources().items()}


def unit_of(module: str) -> str:
    """The top-level module or folder `module` lives in ("memguard" for the package's __init__)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def rank_of(module: str) -> Optional[int]:
    return RANK.get(unit_of(module))


def strongly_connected(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                found.append(sorted(component))

    for start in sorted(edges):
        if start not in index:
            visit(start)
    return found


def a_cycle_through(component: list[str], edges: dict[str, frozenset[str]]) -> list[str]:
    """One concrete cycle inside `component`, for the failure message."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    while True:
        nxt = min(edge for edge in edges[path[-1]] if edge in members)
        if nxt in seen:
            return [*path[path.index(nxt):], nxt]
        path.append(nxt)
        seen.add(nxt)


# -- the package --------------------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    unknown = sorted({unit_of(module) for module in module_names() if rank_of(module) is None})
    assert not unknown, f"give these a layer in LAYERS of tests/test_layers.py: {unknown}"


@pytest.mark.parametrize("module", module_names())
def test_imports_go_down_the_layers(module: str) -> None:
    mine = rank_of(module)
    assert mine is not None, f"{module} has no layer"
    upward = sorted(dep for dep in graph()[module]
                    if rank_of(dep) is None or rank_of(dep) > mine)  # type: ignore[operator]
    assert not upward, (f"{module} ({unit_of(module)}, layer {mine}) imports from above: "
                        + ", ".join(f"{dep} (layer {rank_of(dep)})" for dep in upward))


def test_no_import_cycles() -> None:
    edges = graph()
    cycles = [" -> ".join(a_cycle_through(component, edges))
              + (f" (all of {', '.join(component)})" if len(component) > 2 else "")
              for component in strongly_connected(edges)]
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_the_index_imports_only_errors_and_logging() -> None:
    wrong = {module: sorted(dep for dep in deps
                            if unit_of(dep) != "memguard.index" and dep not in INDEX_MAY_IMPORT)
             for module, deps in graph().items() if unit_of(module) == "memguard.index"}
    wrong = {module: deps for module, deps in wrong.items() if deps}
    assert not wrong, f"memguard.index may import only {INDEX_MAY_IMPORT}: {wrong}"


def sort_key(name: str) -> tuple[int, list[object]]:
    """ruff's order for `__all__` (RUF022, which `make lint` enforces): CONSTANTS, then
    CamelCase, then the rest, each in natural order (digits compare as numbers)."""
    kind = 0 if len(name) > 1 and name.upper() == name else 1 if name[:1].isupper() else 2
    return kind, [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def is_guard_or_lazy_loader(statement: ast.stmt) -> bool:
    """What an __init__ may hold besides re-exports (docs/decisions.md): a guard turning a
    missing framework into the error that names its extra (``try: import django`` whose
    handlers only raise); PEP 562's ``__getattr__``/``__dir__`` loading submodules on first
    access (memguard.integrations imports no framework until an adapter is used); and for a
    lazy package, its re-exports spelled as imports under ``if TYPE_CHECKING:`` (for type
    checkers) and ``sys.modules[__name__].__class__ = ...`` (memguard: a public name wins over
    the same-named submodule)."""
    if isinstance(statement, ast.If):  # the `else:` may hold the loader, hidden from checkers
        return (isinstance(statement.test, ast.Name) and statement.test.id == "TYPE_CHECKING"
                and all(isinstance(inner, (ast.Import, ast.ImportFrom))
                        for inner in statement.body)
                and all(is_guard_or_lazy_loader(inner) and isinstance(inner, ast.FunctionDef)
                        for inner in statement.orelse))
    if isinstance(statement, ast.Assign):
        return ast.unparse(statement).startswith("sys.modules[__name__].__class__ = ")
    if isinstance(statement, ast.Try):
        return (all(isinstance(inner, (ast.Import, ast.ImportFrom)) for inner in statement.body)
                and all(len(handler.body) == 1 and isinstance(handler.body[0], ast.Raise)
                        for handler in statement.handlers)
                and not statement.orelse and not statement.finalbody)
    return isinstance(statement, ast.FunctionDef) and statement.name in ("__getattr__", "__dir__")


def reexport_problems(tree: ast.Module) -> Iterator[str]:
    """What in a package's __init__ is more than a docstring, imports and a sorted `__all__`."""
    body = list(tree.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    exported: Optional[list[str]] = None
    bound: set[str] = set()
    lazy = False  # a PEP 562 loader: __all__ may name submodules it imports on first access
    for statement in body:
        if is_guard_or_lazy_loader(statement):
            lazy = lazy or isinstance(statement, ast.FunctionDef) or (
                isinstance(statement, ast.If) and bool(statement.orelse))
            continue
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            if isinstance(statement, ast.ImportFrom) and statement.module == "__future__":
                continue
            bound.update((alias.asname or alias.name).split(".")[0] for alias in statement.names)
            continue
        target = (statement.targets[0] if isinstance(statement, ast.Assign)
                  and len(statement.targets) == 1 else getattr(statement, "target", None))
        value = getattr(statement, "value", None)
        if (isinstance(statement, (ast.Assign, ast.AnnAssign)) and isinstance(target, ast.Name)
                and target.id == "__all__" and isinstance(value, (ast.List, ast.Tuple))
                and all(isinstance(item, ast.Constant) and isinstance(item.value, str)
                        for item in value.elts)):
            exported = [item.value for item in value.elts]  # type: ignore[attr-defined]
            continue
        yield f"line {statement.lineno}: {ast.unparse(statement).splitlines()[0][:80]}"
    if exported is None:
        if bound:
            yield "no __all__ listing what it re-exports"
        return
    if exported != sorted(exported, key=sort_key):
        yield f"__all__ is not sorted: {exported}"
    unbound = [name for name in exported if name not in bound]
    if unbound and not lazy:
        yield f"__all__ names what no import binds: {unbound}"


@pytest.mark.parametrize("package", package_names())
def test_package_inits_only_reexport(package: str) -> None:
    problems = list(reexport_problems(sources()[package].tree))
    assert not problems, (f"{package}/__init__.py must only re-export (a docstring, imports, a "
                          "sorted __all__): " + "; ".join(problems))


# -- the size rule ---------------------------------------------------------------------------------

MAX_MODULE_LINES = 500
MAX_UNIT_LINES = 300  # a class, a function or a method, docstring included (decorators not)

# Modules allowed over the size rule, each with its reason; an entry goes as soon as its module
# fits (`test_the_size_allow_list_holds_only_modules_over_the_rule` says when). None today.
SIZE_ALLOWED: frozenset[str] = frozenset()


def oversized(tree: ast.Module, lines: int) -> Iterator[str]:
    """What in one file breaks the size rule: the module's length, then each class or
    function (at any depth) longer than `MAX_UNIT_LINES`, measured from its first line
    (its decorators' excluded, as `ast` counts) to its last."""
    if lines > MAX_MODULE_LINES:
        yield f"{lines} lines (at most {MAX_MODULE_LINES})"
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_UNIT_LINES:
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                yield (f"{kind} {node.name} (line {node.lineno}): {length} lines "
                       f"(at most {MAX_UNIT_LINES})")


def size_problems(module: str) -> list[str]:
    source = sources()[module]
    lines = len(source.path.read_text(encoding="utf-8").splitlines())
    return list(oversized(source.tree, lines))


@pytest.mark.parametrize("module", [name for name in module_names() if name not in SIZE_ALLOWED])
def test_modules_and_units_keep_to_the_size_rule(module: str) -> None:
    problems = size_problems(module)
    assert not problems, (f"{module} is over the size rule; split it along its concerns: "
                          + "; ".join(problems))


def test_the_size_allow_list_holds_only_modules_over_the_rule() -> None:
    known = set(module_names())
    fits = sorted(name for name in SIZE_ALLOWED if name not in known or not size_problems(name))
    assert not fits, f"remove from SIZE_ALLOWED in tests/test_layers.py (gone, or fits now): {fits}"


# -- the checks themselves ------------------------------------------------------------------------


def test_the_check_sees_every_kind_of_import() -> None:
    source = ("from typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    from memguard.manager import MemoryManager\n"
              "def later():\n    import memguard.web.wsgi\n"
              "    importlib.import_module('memguard.tools.demo')\n"
              "from . import registry\n"
              "from .handle import StoreHandle\n"
              "from .. import errors\n")
    assert imports_of("memguard.stores.managed", Source(PACKAGE, ast.parse(source), False)) == {
        "memguard.manager", "memguard.web.wsgi", "memguard.tools.demo",
        "memguard.stores.registry", "memguard.stores.handle", "memguard.errors"}


def test_relative_imports_of_an_init_resolve_against_its_own_package() -> None:
    source = "from .handle import StoreHandle\nfrom . import registry\nfrom .. import errors\n"
    assert imports_of("memguard.stores", Source(PACKAGE, ast.parse(source), True)) == {
        "memguard.stores.handle", "memguard.stores.registry", "memguard.errors"}


def test_the_cycle_check_finds_cycles_of_any_length() -> None:
    edges = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}),
             "d": frozenset({"d"}), "e": frozenset({"a"})}
    assert strongly_connected(edges) == [["a", "b", "c"], ["d"]]
    assert a_cycle_through(["a", "b", "c"], edges) == ["a", "b", "c", "a"]


def test_the_reexport_check_refuses_statements_and_unsorted_names() -> None:
    good = ast.parse('"""Doc."""\nfrom __future__ import annotations\n'
                     'from x import a, b\n__all__ = ["a", "b"]\n')
    assert list(reexport_problems(good)) == []
    bad = ast.parse('from x import a, b\n__all__ = ["b", "a", "c"]\nVERSION = a()\n')
    assert list(reexport_problems(bad)) == [
        "line 3: VERSION = a()", "__all__ is not sorted: ['b', 'a', 'c']",
        "__all__ names what no import binds: ['c']"]
    assert sorted(["run", "Mark", "SEED", "x10", "x9", "A"], key=sort_key) == [
        "SEED", "A", "Mark", "run", "x9", "x10"]


def test_an_init_may_guard_a_framework_or_load_submodules_lazily_and_nothing_more() -> None:
    allowed = ast.parse("try:\n    import django\nexcept ImportError as e:\n    raise X() from e\n"
                        "def __getattr__(name):\n    return name\n__all__: list[str] = []\n")
    assert list(reexport_problems(allowed)) == []
    refused = ast.parse("try:\n    import django\nexcept ImportError:\n    django = None\n"
                        "def helper():\n    pass\n")
    assert list(reexport_problems(refused)) == ["line 1: try:", "line 5: def helper():"]
    typed = ast.parse("import sys\nfrom typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from x import a\n"
                      "else:\n    def __getattr__(name):\n        return name\n"
                      "__all__ = ['a']\nsys.modules[__name__].__class__ = P\n")
    assert list(reexport_problems(typed)) == []
    more = ast.parse("if TYPE_CHECKING:\n    from x import a\n    a.b = 1\n"
                     "if TYPE_CHECKING:\n    import x\nelse:\n    import y\n"
                     "sys.modules['other'].__class__ = P\n"
                     "if TYPE_CHECKING:\n    import x\nelse:\n    def helper():\n        pass\n")
    assert list(reexport_problems(more)) == [
        "line 1: if TYPE_CHECKING:", "line 4: if TYPE_CHECKING:",
        "line 8: sys.modules['other'].__class__ = P", "line 9: if TYPE_CHECKING:"]


def test_the_size_check_measures_modules_classes_and_nested_functions() -> None:
    body = "\n".join(["    x = 1"] * (MAX_UNIT_LINES - 1))
    fits = ast.parse(f"def f():\n{body}\n")  # MAX_UNIT_LINES lines exactly
    assert list(oversized(fits, MAX_UNIT_LINES)) == []
    inner = "\n".join(["        x = 1"] * MAX_UNIT_LINES)
    nested = ast.parse(f"class C:\n    def g(self):\n{inner}\n")
    assert list(oversized(nested, MAX_MODULE_LINES + 1)) == [
        f"{MAX_MODULE_LINES + 1} lines (at most {MAX_MODULE_LINES})",
        f"class C (line 1): {MAX_UNIT_LINES + 2} lines (at most {MAX_UNIT_LINES})",
        f"function g (line 2): {MAX_UNIT_LINES + 1} lines (at most {MAX_UNIT_LINES})"]
