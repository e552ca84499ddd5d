"""Run a static tool on the installed layout: ``bastion.<stage>`` as setuptools maps it.

mypy and import-linter do not run setuptools' editable import hook, so they cannot see that
``bastion.core`` is the folder ``core/``. This builds that layout under ``build/layout`` from
pyproject.toml's ``package-dir`` (real folders, each ``.py`` file a hard link to the checkout's
own, since tools that resolve symbolic links would find the checkout's folders again) and runs
the tool with it first on the path:

    python .ci/layout.py mypy            # type-check the package
    python .ci/layout.py lint-imports    # the import contracts of pyproject.toml

Reported paths are under ``build/layout``; the files are the checkout's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TREE = REPO / "build" / "layout"
SKIP = {"__pycache__"}


def _link_package(src: Path, dest: Path, mapped: set[Path]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        if entry.name in SKIP or entry.resolve() in mapped:
            continue
        if entry.is_file() and entry.suffix in (".py", ".pyi"):
            os.link(entry, dest / entry.name)
        elif entry.is_dir() and (entry / "__init__.py").exists():
            _link_package(entry, dest / entry.name, mapped)


def build_tree() -> Path:
    mapping: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"][
        "setuptools"]["package-dir"]
    if TREE.exists():
        shutil.rmtree(TREE)
    mapped = {(REPO / folder).resolve() for folder in mapping.values()}
    for name, folder in sorted(mapping.items()):
        src = (REPO / folder).resolve()
        _link_package(src, TREE / Path(*name.split(".")), mapped - {src})
    return TREE


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    tree = build_tree()
    env = dict(os.environ, MYPYPATH=str(tree),
               PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])))
    tool, *args = argv
    bindir = Path(sys.executable).parent
    config = str(REPO / "pyproject.toml")
    if tool == "mypy":
        return subprocess.call([sys.executable, "-m", "mypy", "--config-file", config,
                                "-p", "bastion", *args], cwd=REPO, env=env)
    if tool == "lint-imports":  # it puts its working directory first on sys.path
        return subprocess.call([str(bindir / tool), config, "--no-cache", *args],
                               cwd=tree, env=env)
    return subprocess.call([str(bindir / tool), *args], cwd=REPO, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
