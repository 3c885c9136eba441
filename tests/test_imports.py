"""kdlib's modules import each other without circles: every import (at the top of a module, inside
a function or under TYPE_CHECKING) is an edge, and the graph of kdlib's modules must have no cycle.
An import deferred into a function to dodge a circle still counts: the circle is a design to fix
(move the shared piece into a module of its own), not an import to hide."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO


def module_names(package: Path) -> dict[str, Path]:
    """``{dotted name: file}`` of every module under ``package`` (a package by its own name)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported(name: str, path: Path) -> set[str]:
    """The dotted names ``path`` (module ``name``) imports, relative imports resolved; ``from x
    import y`` names both x and x.y (y may be a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_cycles(package: Path) -> list[list[str]]:
    """The strongly connected groups of more than one module in ``package``'s import graph
    (Tarjan's algorithm), each sorted."""
    modules = module_names(package)
    edges = {m: sorted(imported(m, p) & modules.keys() - {m}) for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in modules:
        if module not in index:
            visit(module)
    return cycles


def test_kdlib_has_no_import_circles():
    assert import_cycles(REPO / "kdlib") == []


def test_a_circle_through_a_deferred_import_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from . import a\n")            # imports into the circle, not part of it
    assert import_cycles(pkg) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    (pkg / "c.py").write_text("import json\n")
    assert import_cycles(pkg) == []
