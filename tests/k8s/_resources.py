"""Walking rendered resources: find one, its pod templates, its containers."""

from __future__ import annotations

from typing import Any

import yaml

Resource = dict[str, Any]
# Each overlay as committed, and with the RayCronJob variant of scheduled retraining.
VARIANTS = ["dev", "prod", "dev-raycronjob", "prod-raycronjob"]


def find(docs: list[Resource], kind: str, name: str | None = None) -> list[Resource]:
    return [d for d in docs if d["kind"] == kind
            and (name is None or d["metadata"].get("name") == name)]


def one(docs: list[Resource], kind: str, name: str) -> Resource:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def embedded_rayjob(docs: list[Resource]) -> Resource:
    data = one(docs, "ConfigMap", "bastion-retrain")["data"]
    doc: Resource = yaml.safe_load(data["rayjob.yaml"])
    return doc


def pod_specs(doc: Resource) -> list[tuple[str, Resource]]:
    """(where, pod spec) of every pod a resource makes, KubeRay kinds included."""
    spec = doc.get("spec", {})
    kind = doc["kind"]
    if kind in ("Deployment", "StatefulSet"):
        return [("template", spec["template"]["spec"])]
    if kind == "CronJob":
        return [("jobTemplate", spec["jobTemplate"]["spec"]["template"]["spec"])]
    cluster: Resource | None = None
    extra: list[tuple[str, Resource]] = []
    if kind == "RayService":
        cluster = spec["rayClusterConfig"]
    elif kind in ("RayJob", "RayCronJob"):
        job = spec if kind == "RayJob" else spec["jobTemplate"]
        cluster = job["rayClusterSpec"]
        if "submitterPodTemplate" in job:
            extra.append(("submitter", job["submitterPodTemplate"]["spec"]))
    if cluster is None:
        return []
    found = [("head", cluster["headGroupSpec"]["template"]["spec"])]
    found += [(f"worker {g['groupName']}", g["template"]["spec"])
              for g in cluster.get("workerGroupSpecs", [])]
    return found + extra


def pod_templates(doc: Resource) -> list[Resource]:
    """Pod templates (metadata + spec) of Deployments, StatefulSets and Ray clusters."""
    spec = doc.get("spec", {})
    if doc["kind"] in ("Deployment", "StatefulSet"):
        return [spec["template"]]
    cluster = {"RayService": lambda: spec["rayClusterConfig"],
               "RayJob": lambda: spec["rayClusterSpec"],
               "RayCronJob": lambda: spec["jobTemplate"]["rayClusterSpec"]}.get(doc["kind"])
    if cluster is None:
        return []
    c = cluster()
    return [c["headGroupSpec"]["template"]] + [g["template"] for g in c["workerGroupSpecs"]]


def containers(doc: Resource) -> list[tuple[str, Resource]]:
    return [(f"{doc['kind']}/{doc['metadata'].get('name') or doc['metadata'].get('generateName')}"
             f" {where} {c['name']}", c)
            for where, pod in pod_specs(doc) for c in pod.get("containers", [])
            + pod.get("initContainers", [])]


def all_workloads(docs: list[Resource]) -> list[Resource]:
    """Every resource that makes pods, with the RayJob inside the retrain ConfigMap."""
    return [d for d in docs if pod_specs(d)] + [embedded_rayjob(docs)]

