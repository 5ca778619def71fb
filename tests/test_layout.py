"""The package layout a newcomer reads as the architecture: layers, docstrings, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "backout"
MODULES = sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)
LIMIT = 600


def _name(path: Path) -> str:
    return str(path.relative_to(SRC.parent))


@pytest.mark.parametrize(
    "package",
    sorted(p.parent for p in SRC.rglob("__init__.py") if "migrations" not in p.parts),
    ids=_name,
)
def test_every_package_says_what_it_is_for(package: Path) -> None:
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
    assert doc and len(doc.split()) >= 12, f"{_name(package)}/__init__.py needs a docstring"


def test_no_module_is_past_the_split_limit() -> None:
    long = {_name(p): n for p in MODULES if (n := len(p.read_text().splitlines())) > LIMIT}
    assert not long, f"split these along their seams (limit {LIMIT} lines): {long}"


def test_no_private_name_is_imported_across_modules() -> None:
    crossings = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("backout"):
                crossings += [
                    f"{_name(path)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not crossings, "make these public or move them: " + "; ".join(crossings)


def test_every_module_opens_with_a_docstring() -> None:
    missing = [
        _name(p)
        for p in MODULES
        if p.name != "__main__.py" and not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert not missing, f"say what these modules are for: {missing}"
