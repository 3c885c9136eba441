"""The test suite's own layout: what tests share lives in helper modules without the ``test_``
prefix (tinydata, workflows, ...) and fixtures they share in conftest.py, so no test module
imports another (pytest would collect the imported tests twice, and a fixture imported by name
shadows itself)."""
from __future__ import annotations

import ast

from conftest import REPO


def imported_test_modules(path) -> list[str]:
    """The ``test_*`` modules the file at ``path`` imports, at any depth of its code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module] if node.module else [alias.name for alias in node.names]
        else:
            continue
        found += [name for name in names if name.split(".")[0].startswith("test_")]
    return found


def test_no_test_module_imports_another_test_module():
    files = sorted((REPO / "tests").glob("*.py"))
    assert len(files) > 10
    imports = {path.name: imported_test_modules(path) for path in files}
    assert {name: found for name, found in imports.items() if found} == {}


def test_the_layout_check_sees_every_form_of_import(tmp_path):
    t = "test"                                  # (so that a grep of the suite finds no such import here)
    code = (f"import {t}_a\nimport os, {t}_b as b\nfrom {t}_c import x\nfrom . import {t}_d\n"
            f"def f():\n    from {t}_e.sub import y\nimport tinydata\nfrom workflows import snakemake\n")
    (tmp_path / "example.py").write_text(code)
    assert imported_test_modules(tmp_path / "example.py") == [f"{t}_a", f"{t}_b", f"{t}_c", f"{t}_d", f"{t}_e.sub"]
