"""The package's layout: no two modules import each other, however indirectly.

Every import counts, at the top, under TYPE_CHECKING or inside a function: a cycle that only a lazy
or type-only import keeps working is still two modules that cannot be read, or moved, apart.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ecopipe"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports (a name imported from a
    package counts as its submodule where one has that name)."""
    modules = {module_name(p, root): p for p in root.rglob("*.py") if "__pycache__" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_module_imports_itself_through_others():
    try:
        graphlib.TopologicalSorter(imports()).prepare()
    except graphlib.CycleError as cycle:
        raise AssertionError(f"an import cycle: {' -> '.join(cycle.args[1])}") from None


def test_the_walk_finds_a_cycle(tmp_path):
    # The check above can fail: two modules that import each other (one lazily) are a cycle.
    package = tmp_path / "ecopipe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from ecopipe.b import B\n")
    (package / "b.py").write_text("def f():\n    from ecopipe import a\n")
    graph = imports(package)
    assert "ecopipe.b" in graph["ecopipe.a"] and "ecopipe.a" in graph["ecopipe.b"]
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError:
        return
    raise AssertionError("the cycle a -> b -> a was not found")
