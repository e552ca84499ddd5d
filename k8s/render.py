"""Write the files of k8s/ that must equal what the code says, and check that they still do.

- ``rayservice.serve-config.generated.yaml`` beside each ``serve-settings.yaml``: a patch that
  sets the RayService's ``serveConfigV2`` to :func:`serving.config.serve_config` of those
  settings and that policy, laid out as ``serve build`` lays out a Serve config (Ray's own
  dumper), so the cluster runs the application config that runs locally.
- ``components/retrain-raycronjob/raycronjob.retrain.generated.yaml``: a RayCronJob whose
  ``jobTemplate`` is the spec of the one retraining RayJob (``base/retrain/rayjob.retrain.yaml``)
  on the CronJob's schedule (``components/retrain-cronjob/cronjob.retrain.yaml``).

``python -m k8s.render`` writes them; ``python -m k8s.render --check`` exits 1 naming every
stale file (the test suite runs the same check). A ``serve-settings.yaml`` may name another one
as ``base:`` (a path relative to itself) and override some of its values.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion.core.settings import MODEL_NAME, Limits, ServingConfig
from k8s.errors import ManifestError

__all__ = ["ServeSettings", "load_serve_settings", "serve_config_text", "generated_files",
           "stale_files", "write_all", "K8S", "REPO"]

K8S = Path(__file__).resolve().parent
REPO = K8S.parent
SETTINGS_NAME = "serve-settings.yaml"
SERVE_PATCH_NAME = "rayservice.serve-config.generated.yaml"
RAYJOB = K8S / "base" / "retrain" / "rayjob.retrain.yaml"
CRONJOB = K8S / "components" / "retrain-cronjob" / "cronjob.retrain.yaml"
RAYCRONJOB = K8S / "components" / "retrain-raycronjob" / "raycronjob.retrain.generated.yaml"


class ServeSettings(BaseModel):
    """One ``serve-settings.yaml``: what a RayService's Serve config is generated from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rayservice: str = Field("bastion", description="Name of the RayService the patch targets.")
    policy: str = Field(..., description="Tenant policy YAML, relative to the repository root.")
    keys_file: str = Field(
        ..., description="Tenant keys JSON inside the pods (a mounted Secret); no key material "
        "goes into the config.")
    model_version: str | None = Field(
        None, description="Pin a registered model version; default the champion.")
    state_dir: str = Field(..., description="Pod-local state directory of the replicas.")
    host: str = Field(..., description="Address Serve's HTTP proxy binds in the pod.")
    port: int = Field(..., ge=1, le=65535, description="Port of Serve's HTTP proxy.")
    mlflow_tracking_uri: str = Field(..., description="In-cluster MLflow tracking server URL.")
    model_name: str = Field(MODEL_NAME, description="Registered model to serve.")
    limits: Limits = Field(default_factory=Limits, description="API input limits.")
    serving: ServingConfig = Field(default_factory=ServingConfig, description="Serve sizing.")


def _raw_settings(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise ManifestError(f"{path}: `base:` chain loops back to itself")
    if not path.is_file():
        raise ManifestError(f"{path}: no such serve settings file")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a mapping of settings")
    base = data.pop("base", None)
    if base is None:
        return data
    return _deep_merge(_raw_settings((path.parent / base).resolve(), seen + (path,)), data)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _deep_merge(out[key], value) if both else value
    return out


def load_serve_settings(path: Path) -> ServeSettings:
    """Read a ``serve-settings.yaml`` (following ``base:``) into validated settings."""
    try:
        return ServeSettings.model_validate(_raw_settings(path.resolve()))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ManifestError(f"{path}: {problems}") from None


def serve_config_text(spec: ServeSettings) -> str:
    """The Serve config YAML of ``spec``, in ``serve build``'s layout."""
    import ray
    from ray.serve.scripts import ServeDeploySchemaDumper

    from bastion.core.policy import load_policy
    from bastion.core.settings import load_settings
    from bastion.serving.config import serve_config

    # Every field is passed explicitly: BASTION_* variables of whoever runs this must not leak
    # into a committed file.
    settings = load_settings(
        spec.state_dir, host=spec.host, port=spec.port,
        mlflow_tracking_uri=spec.mlflow_tracking_uri, model_name=spec.model_name,
        limits=spec.limits, serving=spec.serving,
    )
    if str(settings.state_dir) != spec.state_dir:
        raise ManifestError(
            f"state_dir {spec.state_dir!r} resolves to {str(settings.state_dir)!r} on this "
            "machine (a symlink?); the pods' path must be absolute and canonical, fix state_dir")
    doc = serve_config(settings, load_policy(REPO / spec.policy), keys={},
                       model_version=spec.model_version, keys_file=spec.keys_file)
    # The same call `serve build` makes (ray/serve/scripts.py), header aside.
    body = yaml.dump(doc, Dumper=ServeDeploySchemaDumper, default_flow_style=False,
                     sort_keys=False, width=80, indent=2)
    header = (f"# Generated by `python -m k8s.render` on Ray v{ray.__version__}: the\n"
              "# serving.config.serve_config document, in the layout `serve build` writes.\n\n")
    return (header + body).rstrip("\n") + "\n"


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the embedded Serve config stays readable."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _str)


def _dump(doc: dict[str, Any], sources: list[Path]) -> str:
    names = "".join(f"#   {p.relative_to(REPO)}\n" for p in sources)
    return ("# Generated by `python -m k8s.render` from\n" + names
            + "# Do not edit: the tests fail when this file differs from what the script writes.\n"
            + yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, width=100))


def _serve_patch(settings_file: Path) -> str:
    spec = load_serve_settings(settings_file)
    patch = {"apiVersion": "ray.io/v1", "kind": "RayService",
             "metadata": {"name": spec.rayservice},
             "spec": {"serveConfigV2": serve_config_text(spec)}}
    return _dump(patch, [settings_file, REPO / spec.policy])


def _raycronjob() -> str:
    rayjob = yaml.safe_load(RAYJOB.read_text())
    cron = yaml.safe_load(CRONJOB.read_text())
    if rayjob.get("kind") != "RayJob" or cron.get("kind") != "CronJob":
        raise ManifestError(f"{RAYJOB} must hold a RayJob and {CRONJOB} a CronJob")
    doc = {"apiVersion": "ray.io/v1", "kind": "RayCronJob",
           "metadata": {"name": cron["metadata"]["name"],
                        "labels": dict(rayjob["metadata"].get("labels", {}))},
           "spec": {"schedule": cron["spec"]["schedule"],
                    "timeZone": cron["spec"]["timeZone"],
                    "jobTemplate": rayjob["spec"]}}
    return _dump(doc, [RAYJOB, CRONJOB])


def generated_files() -> dict[Path, str]:
    """Every generated file and the text it must have."""
    out = {f.parent / SERVE_PATCH_NAME: _serve_patch(f)
           for f in sorted(K8S.rglob(SETTINGS_NAME))}
    out[RAYCRONJOB] = _raycronjob()
    return out


def stale_files() -> list[Path]:
    """Generated files that are missing or differ from what would be written now."""
    return [p for p, text in generated_files().items()
            if not p.is_file() or p.read_text() != text]


def write_all() -> list[Path]:
    """Write every generated file; returns those that changed."""
    changed = []
    for path, text in generated_files().items():
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--check"]):
        print("usage: python -m k8s.render [--check]", file=sys.stderr)
        return 2
    try:
        if args == ["--check"]:
            stale = stale_files()
            for path in stale:
                print(f"stale: {path.relative_to(REPO)}; run `python -m k8s.render`",
                      file=sys.stderr)
            return 1 if stale else 0
        for path in write_all():
            print(f"wrote {path.relative_to(REPO)}")
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
