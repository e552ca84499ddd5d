"""Validate rendered manifests offline against Kubernetes', KubeRay's and Ray Serve's schemas.

- Built-in kinds: the strict schemas ``kubernetes-validate`` ships for Kubernetes
  ``K8S_VERSION`` (an unknown field or a wrong type fails).
- KubeRay kinds (``ray.io``): the CRDs' ``openAPIV3Schema``, read from
  ``$BASTION_KUBERAY_CRDS`` or ``../shared/k8s-schemas/kuberay`` beside the repository, with
  ``additionalProperties: false`` added wherever a schema lists its properties and does not
  preserve unknown fields: the API server would silently prune a misspelled field, here it is
  an error. Their ``metadata`` is checked as Kubernetes' ObjectMeta.
- Enums that the OpenAPI v2-derived schemas lack (imagePullPolicy, concurrencyPolicy, ...), for
  the fields k8s/ uses, in every kind (KubeRay's pod templates too).
- A RayService's ``serveConfigV2`` against Ray Serve's own ``ServeDeploySchema``; a ConfigMap
  value named ``*.yaml`` that holds a resource (the retraining RayJob) as a resource.

Not checked: CEL rules (``x-kubernetes-validations``), formats (int32, quantities), admission
webhooks, and whatever the operator decides at run time.

Run ``python -m k8s.validate k8s/overlays/dev`` to build an overlay (``kubectl kustomize``) and
validate it.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from jsonschema import Draft4Validator
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from k8s.errors import ManifestError, ManifestInvalidError
from k8s.kustomize import build

__all__ = ["K8S_VERSION", "Validator", "default_crd_dir"]

# The Kubernetes minor the manifests target (and the kubectl in the image, see Dockerfile).
K8S_VERSION = "1.35"
REPO = Path(__file__).resolve().parent.parent

# Values from the Kubernetes API reference; its OpenAPI v3 carries them as enums, the v2-derived
# schemas of kubernetes-validate do not. Keyed by field name, checked wherever the field appears.
_ENUMS: dict[str, set[str]] = {
    "imagePullPolicy": {"Always", "IfNotPresent", "Never"},
    "restartPolicy": {"Always", "OnFailure", "Never"},
    "concurrencyPolicy": {"Allow", "Forbid", "Replace"},
    "protocol": {"TCP", "UDP", "SCTP"},
    "policyTypes": {"Ingress", "Egress"},
    "podManagementPolicy": {"OrderedReady", "Parallel"},
    "accessModes": {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"},
    "unhealthyPodEvictionPolicy": {"IfHealthyBudget", "AlwaysAllow"},
    "terminationMessagePolicy": {"File", "FallbackToLogsOnError"},
}
# ``type`` means different things in different places: checked at these paths only.
_PATH_ENUMS: dict[tuple[str, tuple[str, ...]], set[str]] = {
    ("Service", ("spec", "type")): {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"},
    ("Deployment", ("spec", "strategy", "type")): {"RollingUpdate", "Recreate"},
    ("StatefulSet", ("spec", "updateStrategy", "type")): {"RollingUpdate", "OnDelete"},
}


def default_crd_dir() -> Path:
    """``$BASTION_KUBERAY_CRDS``, else ``../shared/k8s-schemas/kuberay`` beside the repo."""
    return Path(os.environ.get("BASTION_KUBERAY_CRDS")
                or REPO.parent / "shared" / "k8s-schemas" / "kuberay")


class Validator:
    """Validates resources; holds the parsed CRD schemas (load once, reuse)."""

    def __init__(self, crd_dir: Path | None = None, k8s_version: str = K8S_VERSION) -> None:
        self.k8s_version = k8s_version
        self.crd_dir = crd_dir or default_crd_dir()
        self._crds = _load_crds(self.crd_dir)

    def errors(self, doc: dict[str, Any]) -> list[str]:
        """Every problem found in one resource, each as ``Kind/name: path: message``."""
        kind = doc.get("kind", "?")
        meta = doc.get("metadata", {})
        where = f"{kind}/{meta.get('name') or meta.get('generateName', '?')}"
        group = doc.get("apiVersion", "").rpartition("/")[0]
        if group == "ray.io":
            found = self._ray_errors(doc)
        else:
            found = self._builtin_errors(doc)
        found += _enum_errors(doc, kind)
        if kind == "RayService" and isinstance(doc.get("spec", {}).get("serveConfigV2"), str):
            found += _serve_config_errors(doc["spec"]["serveConfigV2"])
        if kind == "ConfigMap":
            for key, text in (doc.get("data") or {}).items():
                if not key.endswith((".yaml", ".yml")):
                    continue
                try:
                    embedded = yaml.safe_load(text)
                except yaml.YAMLError as err:
                    found.append(f"data[{key}]: not YAML ({err})")
                    continue
                if isinstance(embedded, dict) and "apiVersion" in embedded and "kind" in embedded:
                    found += [f"data[{key}] {e}" for e in self.errors(embedded)]
        return [f"{where}: {e}" for e in found]

    def check(self, docs: Iterable[dict[str, Any]], source: str = "manifests") -> None:
        """Raise :class:`ManifestInvalidError` listing every problem in ``docs``."""
        problems = [e for d in docs for e in self.errors(d)]
        if problems:
            raise ManifestInvalidError(f"{source}: {len(problems)} problem(s):\n  "
                                       + "\n  ".join(problems))

    def _builtin_errors(self, doc: dict[str, Any]) -> list[str]:
        try:
            kubernetes_validate.validate(doc, self.k8s_version, strict=True)
        except kubernetes_validate.ValidationError as err:
            return [f"{_path(err.absolute_path)}: {err.message}"]
        except kubernetes_validate.SchemaNotFoundError:
            return [f"no schema for apiVersion {doc.get('apiVersion')} kind {doc.get('kind')} "
                    f"in Kubernetes {self.k8s_version}: a typo in apiVersion/kind?"]
        return []

    def _ray_errors(self, doc: dict[str, Any]) -> list[str]:
        key = (doc.get("apiVersion", ""), doc.get("kind", ""))
        if key not in self._crds:
            known = ", ".join(f"{v} {k}" for v, k in sorted(self._crds))
            return [f"no KubeRay CRD for {key[0]} {key[1]} in {self.crd_dir} (known: {known})"]
        found = [f"{_path(e.absolute_path)}: {e.message}"
                 for e in sorted(self._crds[key].iter_errors(doc), key=lambda e: list(e.path))]
        # CRDs leave metadata open; the API server checks it as ObjectMeta, so do we.
        stand_in = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata", {})}
        return found + self._builtin_errors(stand_in)


def _load_crds(crd_dir: Path) -> dict[tuple[str, str], Any]:
    files = sorted(crd_dir.glob("ray.io_*.yaml"))
    if not files:
        raise ManifestError(
            f"no KubeRay CRDs (ray.io_*.yaml) in {crd_dir}; set BASTION_KUBERAY_CRDS to a folder "
            "holding them (kuberay's ray-operator/config/crd/bases, v1.7)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crds: dict[tuple[str, str], Any] = {}
    for file in files:
        crd = yaml.load(file.read_text(), Loader=loader)
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            # OpenAPI 3.0 schemas are closest to draft 4 (e.g. boolean exclusiveMinimum).
            crds[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = (
                Draft4Validator(schema))
    return crds


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    out = copy.copy(schema)
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
                "x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [_strict(s) for s in out[key]]
    return out


def _enum_errors(doc: dict[str, Any], kind: str) -> list[str]:
    found: list[str] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                allowed = _ENUMS.get(key) or _PATH_ENUMS.get((kind, path + (key,)))
                values = value if isinstance(value, list) else [value]
                if allowed and all(isinstance(v, str) for v in values):
                    found.extend(f"{_path(path + (key,))}: {v!r} is not one of {sorted(allowed)}"
                                 for v in values if v not in allowed)
                walk(value, path + (key,))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, path + (str(i),))

    walk(doc, ())
    return found


def _serve_config_errors(text: str) -> list[str]:
    try:
        ServeDeploySchema.model_validate(yaml.safe_load(text))
    except ValidationError as err:
        return [f"spec.serveConfigV2: {'.'.join(map(str, e['loc']))}: {e['msg']}"
                for e in err.errors()]
    except yaml.YAMLError as err:
        return [f"spec.serveConfigV2: not YAML ({err})"]
    return []


def _path(parts: Iterable[Any]) -> str:
    return ".".join(str(p) for p in parts) or "<root>"


def main(argv: list[str] | None = None, validator: Validator | None = None) -> int:
    targets = (argv if argv is not None else sys.argv[1:]) or ["k8s/overlays/dev",
                                                               "k8s/overlays/prod"]
    validator = validator or Validator()
    status = 0
    for target in targets:
        try:
            docs = build(target)
            validator.check(docs, target)
        except ManifestError as err:
            print(f"error: {err}", file=sys.stderr)
            status = 1
        else:
            print(f"ok: {target}: {len(docs)} resources valid (Kubernetes {K8S_VERSION}, "
                  f"KubeRay CRDs in {validator.crd_dir})")
    return status


if __name__ == "__main__":
    sys.exit(main())
