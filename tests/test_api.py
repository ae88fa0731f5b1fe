"""The public API of fer_core: every exported name resolves, and the lazy table matches what type checkers see."""
from __future__ import annotations

import ast
import importlib

import fer_core
from conftest import ROOT


def test_every_exported_name_is_its_modules_object():
    for module, names in fer_core._EXPORTS.items():
        for name in names:
            assert getattr(fer_core, name) is getattr(importlib.import_module(f"fer_core.{module}"), name)
    assert sorted(fer_core.__all__) == sorted(n for names in fer_core._EXPORTS.values() for n in names)


def test_type_checking_imports_list_the_same_names_as_the_lazy_table():
    tree = ast.parse((ROOT / "fer_core" / "__init__.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1
        seen[node.module] = sorted(alias.name for alias in node.names)
    assert seen == {module: sorted(names) for module, names in fer_core._EXPORTS.items()}
