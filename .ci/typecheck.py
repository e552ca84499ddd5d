"""Type-check the installed layout: ``bastion.<stage>`` as setuptools maps it.

mypy does not run setuptools' editable import hook, so it cannot see that ``bastion.core`` is
the folder ``core/``. This builds that layout as a tree of directory links under
``build/typecheck`` from pyproject.toml's ``package-dir`` and runs mypy on the ``bastion``
package there. Error paths are reported under that tree; the files are the checkout's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TREE = REPO / "build" / "typecheck"


def build_tree() -> Path:
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    if TREE.exists():
        shutil.rmtree(TREE)
    root = TREE / "bastion"
    root.mkdir(parents=True)
    for entry in (REPO / mapping["bastion"]).iterdir():
        if entry.suffix == ".py" or (entry.is_dir() and (entry / "__init__.py").exists()):
            os.symlink(entry, root / entry.name)
    for name, folder in mapping.items():
        if name == "bastion":
            continue
        link = TREE / Path(*name.split("."))
        if not link.exists():
            os.symlink(REPO / folder, link)
    return TREE


def main() -> int:
    tree = build_tree()
    env = dict(os.environ, MYPYPATH=str(tree))
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
           "-p", "bastion", *sys.argv[1:]]
    return subprocess.call(cmd, cwd=REPO, env=env)


if __name__ == "__main__":
    sys.exit(main())
