"""Rendered k8s/ overlays (``kubectl kustomize``), built once per session from a copy of the
tree whose git-ignored secret files are filled from their ``*.example`` templates, and one
schema validator."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml

from k8s.kustomize import INSTALL_KUBECTL, build, kubectl_path
from k8s.render import K8S, REPO
from k8s.validate import Validator, default_crd_dir
from tests._requires import missing
from tests.k8s._resources import VARIANTS, Resource


@pytest.fixture(scope="session")
def validator() -> Validator:
    if not default_crd_dir().is_dir():
        missing(f"the KubeRay CRD schemas ({default_crd_dir()})",
                "put the shared/ folder beside the checkout or set BASTION_KUBERAY_CRDS")
    return Validator()


@pytest.fixture(scope="session")
def k8s_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("__pycache__"))
    for example in root.glob("overlays/*/secrets/*.example"):
        shutil.copy(example, example.with_suffix(""))
    for overlay in ("dev", "prod"):
        variant = root / "overlays" / f"{overlay}-raycronjob"
        shutil.copytree(root / "overlays" / overlay, variant)
        file = variant / "kustomization.yaml"
        k = yaml.safe_load(file.read_text())
        k["components"] = [c.replace("retrain-cronjob", "retrain-raycronjob")
                           for c in k["components"]]
        file.write_text(yaml.safe_dump(k))
    return root


@pytest.fixture(scope="session")
def kubectl() -> str:
    """The kubectl that renders the overlays (``kubectl kustomize``, Kustomize v5)."""
    found = kubectl_path()
    if found is None:
        missing("kubectl (its built-in Kustomize v5 renders the overlays)", INSTALL_KUBECTL)
    assert found is not None
    return found


@pytest.fixture(scope="session")
def rendered(k8s_copy: Path, kubectl: str) -> dict[str, list[Resource]]:
    return {v: build(k8s_copy / "overlays" / v, kubectl) for v in VARIANTS}


@pytest.fixture(scope="session")
def pins() -> dict[str, str]:
    """Exact pins of pyproject.toml's dependencies, by distribution name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out = {}
    for dep in project["dependencies"]:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^;\s]+)", dep.strip())
        if m:
            out[m.group(1)] = m.group(3)
    out["bastion"] = project["version"]
    low = re.search(r">=\s*3\.(\d+)", project["requires-python"])
    assert low, "requires-python needs a lower bound"
    out["python_tag"] = f"py3{low.group(1)}"
    return out
