"""k8s.kustomize renders with the real ``kubectl kustomize``; when it cannot, the error says
why and how to fix it (install kubectl, add the kustomization, copy a secret's example)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from k8s.errors import KubectlNotFoundError, KustomizeError
from k8s.kustomize import build

CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
             "data": {"A": "1"}}


def _write(root: Path, files: dict[str, object]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return root


def test_build_returns_kustomizes_resources(tmp_path: Path, kubectl: str) -> None:
    _write(tmp_path, {"kustomization.yaml": {"namespace": "ns", "resources": ["c.yaml"]},
                      "c.yaml": CONFIGMAP})
    assert build(tmp_path, kubectl) == [{**CONFIGMAP, "metadata": {"name": "c",
                                                                   "namespace": "ns"}}]


def test_without_kubectl_the_error_says_how_to_install_it(tmp_path: Path) -> None:
    _write(tmp_path, {"kustomization.yaml": {"resources": []}})
    with pytest.raises(KubectlNotFoundError, match=r"kubectl not found .* install kubectl"):
        build(tmp_path, kubectl=str(tmp_path / "no-kubectl"))


def test_a_directory_without_a_kustomization_is_named(tmp_path: Path) -> None:
    with pytest.raises(KustomizeError, match=r"no kustomization.yaml in this directory"):
        build(tmp_path / "nowhere")


def test_kustomizes_own_error_comes_through(tmp_path: Path, kubectl: str) -> None:
    _write(tmp_path, {"kustomization.yaml": {"resources": ["c.yaml", "c.yaml"]},
                      "c.yaml": CONFIGMAP})
    with pytest.raises(KustomizeError, match=r"`kubectl kustomize` failed: .*c\.yaml"):
        build(tmp_path, kubectl)


def test_a_missing_secret_file_says_to_copy_its_example(tmp_path: Path, kubectl: str) -> None:
    _write(tmp_path, {
        "kustomization.yaml": {"generatorOptions": {"disableNameSuffixHash": True},
                               "secretGenerator": [{"name": "s", "envs": ["secrets/a.env"]}]},
        "secrets/a.env.example": "A=\n",
    })
    with pytest.raises(KustomizeError, match=r"missing secrets/a.env: copy each \*.example"):
        build(tmp_path, kubectl)
