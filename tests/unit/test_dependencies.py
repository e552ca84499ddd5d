"""Every third-party module the package code imports comes from a distribution that
pyproject.toml declares, not only from a dependency's dependency."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imported(folders: list[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for folder in folders:
        for file in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0
                         and node.module else [])
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(
                        str(file.relative_to(REPO)))
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_directly_imported_module_is_declared() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = {_normal(re.split(r"[\[<>=!~; ]", d.strip(), maxsplit=1)[0])
                for d in pyproject["project"]["dependencies"]}
    folders = list(pyproject["tool"]["setuptools"]["package-dir"].values())
    providers = packages_distributions()
    undeclared = {}
    for module, files in _imported(folders).items():
        if module in sys.stdlib_module_names or module == "bastion":
            continue
        dists = {_normal(d) for d in providers.get(module, [])}
        assert dists, f"{module} (imported by {sorted(files)}) is not installed"
        if not dists & declared:
            undeclared[module] = sorted(files)
    assert not undeclared, f"declare these in pyproject.toml's dependencies: {undeclared}"
