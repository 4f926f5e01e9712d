"""The import graph of `zoo` and `ops`: no cycle, and the layers point one way (ops knows nothing of zoo, the data
sets know nothing of the engine).

Every module is parsed with `ast`, nothing is imported: an edge is any ``import`` / ``from ... import`` statement
anywhere in a module, at its top or inside a function (a lazy import is a dependency all the same), resolved to
the module it names (``from zoo.engine import config`` is an edge to ``zoo.engine.config``; ``import torch`` is
outside the graph). A package's own ``__init__`` is not an implicit dependency of its submodules.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "ops")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
            if "__pycache__" not in p.parts}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module `name` refers to: itself, else its longest prefix that is a module of the graph."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over every module of `zoo` and `ops`."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(_resolve(alias.name, modules) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets.update(_resolve(f"{base}.{alias.name}" if base else alias.name, modules)
                               for alias in node.names)
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_stack:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in done:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def _edges(graph: dict[str, set[str]], source: str, target: str) -> list[str]:
    def within(name: str, pkg: str) -> bool:
        return name == pkg or name.startswith(pkg + ".")

    return sorted(f"{a} -> {b}" for a, targets in graph.items() if within(a, source)
                  for b in targets if within(b, target))


def test_graph_covers_the_packages():
    graph = import_graph()
    assert {"zoo", "ops", "zoo.engine.train", "zoo.data"} <= graph.keys()
    assert "zoo.engine.config" in graph["zoo.engine.train"]  # module-level import
    assert "zoo.engine.train" in graph["zoo.engine.cli"]  # function-level import


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_data_does_not_import_engine():
    assert _edges(import_graph(), "zoo.data", "zoo.engine") == []


def test_ops_does_not_import_zoo():
    assert _edges(import_graph(), "ops", "zoo") == []
