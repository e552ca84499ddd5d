"""A broken manifest fails validation: a misspelled field, a wrong enum value or type, in a
KubeRay kind and in a built-in kind, in metadata, in the Serve config and in the RayJob that
travels inside a ConfigMap; a broken file in the tree fails the whole overlay."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from k8s.errors import ManifestError, ManifestInvalidError
from k8s.kustomize import build
from k8s.validate import Validator, main
from tests.k8s._resources import Resource, one


def _worker(doc: Resource) -> Resource:
    return doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]


def _set(path: str, value: object) -> Callable[[Resource], None]:
    """A mutation: set a dotted path (list indices as numbers), creating nothing."""
    *parents, last = path.split(".")

    def mutate(doc: Resource) -> None:
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = value

    return mutate


def _rename(path: str, new: str) -> Callable[[Resource], None]:
    *parents, last = path.split(".")

    def mutate(doc: Resource) -> None:
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[new] = node.pop(last)

    return mutate


RAY_CLUSTER = "spec.rayClusterConfig"
WORKER_CONTAINER = f"{RAY_CLUSTER}.workerGroupSpecs.0.template.spec.containers.0"
CASES: list[tuple[str, str, Callable[[Resource], None], str]] = [
    ("RayService", "bastion", _rename(f"{RAY_CLUSTER}.rayVersion", "rayVerison"),
     r"'rayVerison' was unexpected"),
    ("RayService", "bastion", _rename(f"{WORKER_CONTAINER}.envFrom", "envFrm"),
     r"containers.0: Additional properties .*'envFrm'"),
    ("RayService", "bastion", _set(f"{RAY_CLUSTER}.autoscalerOptions.upscalingMode", "Fast"),
     r"upscalingMode: 'Fast' is not one of \['Default', 'Aggressive', 'Conservative'\]"),
    ("RayService", "bastion", _set(f"{RAY_CLUSTER}.workerGroupSpecs.0.replicas", "two"),
     r"replicas: 'two' is not of type 'integer'"),
    ("RayService", "bastion", _set(f"{WORKER_CONTAINER}.imagePullPolicy", "Sometimes"),
     r"imagePullPolicy: 'Sometimes' is not one of"),
    ("RayService", "bastion", _rename("metadata.labels", "lables"),
     r"metadata: Additional properties .*'lables'"),
    ("RayService", "bastion", _set("spec.serveConfigV2", "proxy_location: Nowhere\n"),
     r"spec.serveConfigV2: proxy_location: Input should be"),
    ("RayService", "bastion", _set("apiVersion", "ray.io/v2"), r"no KubeRay CRD for ray.io/v2"),
    ("Deployment", "mlflow", _rename("spec.replicas", "replica"), r"'replica' was unexpected"),
    ("Deployment", "mlflow", _set("spec.strategy", {"type": "Rolling"}),
     r"spec.strategy.type: 'Rolling' is not one of \['Recreate', 'RollingUpdate'\]"),
    ("CronJob", "bastion-retrain", _set("spec.concurrencyPolicy", "Never"),
     r"concurrencyPolicy: 'Never' is not one of \['Allow', 'Forbid', 'Replace'\]"),
    ("Service", "mlflow", _set("spec.ports.0.port", "http"), r"ports.0.port: 'http' is not"),
    ("NetworkPolicy", "mlflow", _set("spec.policyTypes", ["Ingres"]),
     r"policyTypes: 'Ingres' is not one of"),
    ("Role", "bastion-retrain-trigger", _set("kind", "Roll"), r"no schema for .* kind Roll"),
]


@pytest.mark.parametrize(("kind", "name", "mutate", "match"), CASES,
                         ids=[f"{c[0]}-{c[3][:24]}" for c in CASES])
def test_a_broken_manifest_fails_with_its_path(
    rendered: dict[str, list[Resource]], validator: Validator,
    kind: str, name: str, mutate: Callable[[Resource], None], match: str,
) -> None:
    doc = copy.deepcopy(one(rendered["prod"], kind, name))
    assert validator.errors(doc) == []
    mutate(doc)
    with pytest.raises(ManifestInvalidError, match=match):
        validator.check([doc])


@pytest.mark.parametrize(
    ("field", "typo"), [("shutdownAfterJobFinishes", "shutdownAfterJobFinish"),
                        ("rayClusterSpec", "rayClusterSpecs")])
def test_a_typo_in_the_rayjob_inside_the_configmap_fails(
    rendered: dict[str, list[Resource]], validator: Validator, field: str, typo: str
) -> None:
    cm = copy.deepcopy(one(rendered["dev"], "ConfigMap", "bastion-retrain"))
    cm["data"]["rayjob.yaml"] = cm["data"]["rayjob.yaml"].replace(f"  {field}:", f"  {typo}:")
    with pytest.raises(ManifestInvalidError, match=rf"data\[rayjob.yaml\] RayJob/.*'{typo}'"):
        validator.check([cm])


def test_a_typo_in_the_raycronjob_fails(
    rendered: dict[str, list[Resource]], validator: Validator
) -> None:
    doc = copy.deepcopy(one(rendered["prod-raycronjob"], "RayCronJob", "bastion-retrain"))
    _rename("spec.jobTemplate.entrypoint", "entryPoint")(doc)
    with pytest.raises(ManifestInvalidError, match=r"spec.jobTemplate: .*'entryPoint'"):
        validator.check([doc])


def test_a_typo_in_a_committed_file_fails_the_overlay(
    k8s_copy: Path, validator: Validator, tmp_path: Path, kubectl: str
) -> None:
    tree = tmp_path / "k8s"
    shutil.copytree(k8s_copy, tree)
    file = tree / "base" / "serving" / "rayservice.bastion.yaml"
    file.write_text(file.read_text().replace("minReplicas: 1", "minReplica: 1"))
    with pytest.raises(ManifestInvalidError, match=r"'minReplica' was unexpected"):
        validator.check(build(tree / "overlays" / "dev", kubectl), "dev")


def test_missing_crds_say_where_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"no KubeRay CRDs .* set BASTION_KUBERAY_CRDS"):
        Validator(crd_dir=tmp_path)


def test_the_command_line_builds_and_validates_overlays(
    k8s_copy: Path, validator: Validator, kubectl: str, capsys: pytest.CaptureFixture[str]
) -> None:
    overlays = [str(k8s_copy / "overlays" / o) for o in ("dev", "prod")]
    assert main(overlays, validator) == 0
    assert capsys.readouterr().out.count("resources valid") == 2
    assert main([str(k8s_copy / "overlays" / "nowhere")], validator) == 1
    assert "no kustomization.yaml" in capsys.readouterr().err
