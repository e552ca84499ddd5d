"""The offline kustomize subset renders what kustomize would for the features k8s/ uses, and
refuses, by name, what it does not implement."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s._kustomize import build, json_patch, strategic_merge
from k8s.errors import KustomizeError

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
    "spec": {"replicas": 1, "template": {"spec": {"containers": [
        {"name": "app", "image": "app:1", "args": ["--a"],
         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
        {"name": "sidecar", "image": "side:1"},
    ]}}},
}


def _write(root: Path, files: dict[str, object]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return root


def test_strategic_merge_merges_named_lists_and_replaces_the_rest() -> None:
    patch = {"spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"name": "app", "args": ["--b"], "env": [{"name": "B", "value": "3"},
                                                 {"name": "C", "value": "4"}]},
    ]}}}}
    merged = strategic_merge(DEPLOYMENT, patch)
    app, sidecar = merged["spec"]["template"]["spec"]["containers"]
    assert merged["spec"]["replicas"] == 3 and app["image"] == "app:1" and sidecar["name"] == (
        "sidecar")
    assert app["args"] == ["--b"]
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"},
                          {"name": "C", "value": "4"}]
    assert DEPLOYMENT["spec"]["replicas"] == 1  # the input is left alone
    assert "replicas" not in strategic_merge(DEPLOYMENT, {"spec": {"replicas": None}})["spec"]
    with pytest.raises(KustomizeError, match=r"\$patch"):
        strategic_merge(DEPLOYMENT, {"spec": {"$patch": "delete"}})


def test_json_patch_adds_replaces_removes_and_names_a_missing_path() -> None:
    doc = yaml.safe_load(yaml.safe_dump(DEPLOYMENT))
    json_patch(doc, [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "app:2"},
        {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "x"}},
        {"op": "remove", "path": "/spec/template/spec/containers/1"},
        {"op": "add", "path": "/metadata/labels", "value": {"a/b": "c"}},
    ])
    assert [c["name"] for c in doc["spec"]["template"]["spec"]["containers"]] == ["app", "x"]
    assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == "app:2"
    assert doc["metadata"]["labels"] == {"a/b": "c"}
    with pytest.raises(KustomizeError, match="'nope' does not exist"):
        json_patch(doc, [{"op": "replace", "path": "/spec/nope/x", "value": 1}])
    with pytest.raises(KustomizeError, match="'move' not supported"):
        json_patch(doc, [{"op": "move", "from": "/a", "path": "/b"}])


def test_overlay_with_component_generators_patches_namespace_and_labels(tmp_path: Path) -> None:
    _write(tmp_path, {
        "base/kustomization.yaml": {"resources": ["web.yaml"]},
        "base/web.yaml": DEPLOYMENT,
        "comp/kustomization.yaml": {
            "apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
            "patches": [{"patch": yaml.safe_dump(
                [{"op": "replace", "path": "/spec/replicas", "value": 5}]),
                "target": {"kind": "Deployment", "name": "web"}}]},
        "over/kustomization.yaml": {
            "namespace": "ns", "resources": ["../base"], "components": ["../comp"],
            "labels": [{"pairs": {"part-of": "x"}}],
            "generatorOptions": {"disableNameSuffixHash": True},
            "configMapGenerator": [{"name": "cm", "files": ["k.txt=data/v.txt"],
                                    "literals": ["L=1"]}],
            "secretGenerator": [{"name": "s", "envs": ["s.env"]}]},
        "over/data/v.txt": "hello\n",
        "over/s.env": "# comment\nUSER=u\nPASS=p=q\n",
    })
    docs = {d["kind"]: d for d in build(tmp_path / "over")}
    assert docs["Deployment"]["spec"]["replicas"] == 5
    assert {d["metadata"]["namespace"] for d in docs.values()} == {"ns"}
    assert all(d["metadata"]["labels"] == {"part-of": "x"} for d in docs.values())
    assert docs["ConfigMap"]["data"] == {"L": "1", "k.txt": "hello\n"}
    secret = {k: base64.b64decode(v).decode() for k, v in docs["Secret"]["data"].items()}
    assert secret == {"USER": "u", "PASS": "p=q"}


@pytest.mark.parametrize(
    ("kustomization", "match"),
    [
        ({"resources": ["web.yaml"], "commonLabels": {"a": "b"}}, "commonLabels not supported"),
        ({"resources": ["web.yaml"], "configMapGenerator": [{"name": "c", "literals": ["a=b"]}]},
         "needs `disableNameSuffixHash: true`"),
        ({"resources": ["web.yaml"], "patches": [{"patch": "[]"}]}, "needs a `target`"),
        ({"resources": ["web.yaml"], "patches": [{"patch": yaml.safe_dump(
            {"kind": "Deployment", "metadata": {"name": "other"}})}]},
         "targets Deployment/other, which is not among"),
        ({"resources": ["web.yaml", "web.yaml"]}, "defined twice"),
        ({"resources": ["https://example.com/x.yaml"]}, "remote resource"),
        ({"resources": ["web.yaml"], "components": ["."]}, "used as a Component"),
    ],
    ids=["unsupported-field", "name-hash", "6902-without-target", "no-target", "duplicate",
         "remote", "kustomization-as-component"],
)
def test_unsupported_or_broken_kustomizations_fail_loudly(
    tmp_path: Path, kustomization: dict[str, object], match: str
) -> None:
    _write(tmp_path, {"kustomization.yaml": kustomization, "web.yaml": DEPLOYMENT})
    with pytest.raises(KustomizeError, match=match):
        build(tmp_path)


def test_a_missing_secret_file_says_to_copy_its_example(tmp_path: Path) -> None:
    _write(tmp_path, {
        "kustomization.yaml": {"generatorOptions": {"disableNameSuffixHash": True},
                               "secretGenerator": [{"name": "s", "envs": ["secrets/a.env"]}]},
        "secrets/a.env.example": "A=\n",
    })
    with pytest.raises(KustomizeError, match=r"copy a.env.example to a.env and fill in"):
        build(tmp_path)
