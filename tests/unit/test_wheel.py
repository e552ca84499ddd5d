"""One import name: the built wheel installs ``bastion`` and nothing else at top level, and the
editable install ``make`` uses resolves the same names."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGES = ("core", "serving", "training", "drift", "registry", "review")


def tracked_tree(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_the_wheel_installs_only_bastion_at_top_level(tmp_path: Path) -> None:
    src = tracked_tree(tmp_path / "src")
    # The checkout may hold files not yet committed: build what is tracked, as CI's clone does.
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(src)], check=True, capture_output=True)
    (wheel,) = out.glob("bastion-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"bastion", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for stage in STAGES:
        assert f"bastion/{stage}/__init__.py" in names
    assert "bastion/core/default_policy.yaml" in names
    # the Alembic environment and revisions `bastion db upgrade` applies
    assert {"bastion/core/store/migrations/env.py", "bastion/core/store/migrations/script.py.mako",
            "bastion/core/store/migrations/versions/0001_schema.py"} <= set(names)
    assert "bastion/training/starter_model/heads.npz" in names
    assert "bastion/training/starter_model/first_stage.npz" in names  # the cascade
    entry = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "bastion = bastion.cli:main" in entry or "bastion = bastion.cli:main" in entry


def test_outside_the_checkout_only_bastion_names_import(tmp_path: Path) -> None:
    code = ("import importlib.util as u, bastion.serving.app, bastion.registry.pyfunc;"
            f"print([n for n in {STAGES!r} if u.find_spec(n) is not None])")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
