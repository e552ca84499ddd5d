"""Read-only views of the registry for people: the versions with their gate verdicts, a
version's latest gate report, and the drift monitor's reports with their plots (the console's
Models and Drift screens). Everything is read from MLflow, so it is the same wherever the
registry is, not only in the state directory that wrote it."""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from bastion.core.errors import ModelError
from bastion.registry.store import DRIFT_EXPERIMENT, ModelRegistry

__all__ = ["drift_report", "drift_runs", "gate_report", "version_rows"]


def _read(registry: ModelRegistry, run_id: str, path: str) -> bytes:
    """An artifact's bytes (downloaded to a directory removed afterwards)."""
    with tempfile.TemporaryDirectory() as tmp:
        return Path(registry.client.download_artifacts(run_id, path, tmp)).read_bytes()


def version_rows(registry: ModelRegistry) -> list[dict[str, Any]]:
    """Every version, newest first: aliases, gate verdict and failures, kind, run, created."""
    rows = []
    for v in reversed(registry.list_versions()):
        failures = v.tags.get("bastion.gate_failures", "")
        rows.append({
            "version": v.version, "aliases": list(v.aliases), "run_id": v.run_id,
            "created": v.created / 1000, "kind": v.tags.get("bastion.kind"),
            "validation_status": v.tags.get("validation_status"),
            "gate_champion": v.tags.get("bastion.gate_champion") or None,
            "gate_failures": [f for f in failures.split(", ") if f],
        })
    return rows


def _run_tags(registry: ModelRegistry, run_id: str | None) -> dict[str, str]:
    if not run_id:
        return {}
    try:
        return dict(registry.client.get_run(run_id).data.tags)
    except MlflowException:
        return {}


def gate_report(registry: ModelRegistry, version: str) -> dict[str, Any]:
    """The version's latest stored gate report (``gate/report-<UTC time>.json`` of its run) and
    why the version was made; ``report`` is None when no gate has run on it yet."""
    info = registry.get(version)
    tags = _run_tags(registry, info.run_id)
    out: dict[str, Any] = {"version": info.version, "aliases": list(info.aliases),
                           "validation_status": info.tags.get("validation_status"),
                           "reason": tags.get("bastion.reason"),
                           "run_name": tags.get("mlflow.runName"), "report": None}
    if not info.run_id:
        return out
    try:
        names = sorted(a.path for a in registry.client.list_artifacts(info.run_id, "gate")
                       if a.path.endswith(".json"))
    except (MlflowException, OSError):
        names = []
    if names:
        out["report"] = json.loads(_read(registry, info.run_id, names[-1]))
        out["report_at"] = Path(names[-1]).stem.removeprefix("report-")
    return out


def drift_runs(registry: ModelRegistry, tenants: tuple[str, ...] | list[str],
               limit: int = 50) -> list[dict[str, Any]]:
    """The drift monitor's recent checks of ``tenants``, newest first, with their verdicts."""
    exp = registry.client.get_experiment_by_name(DRIFT_EXPERIMENT)
    if exp is None:
        return []
    rows = []
    for tenant in tenants:
        quoted = tenant.replace("'", "\\'")
        for run in registry.client.search_runs(
                [exp.experiment_id], f"tags.`bastion.tenant` = '{quoted}'",
                order_by=["attributes.start_time DESC"], max_results=limit):
            m, t = run.data.metrics, run.data.tags
            rows.append({"run_id": run.info.run_id, "tenant": tenant,
                         "at": run.info.start_time / 1000,
                         "model_version": t.get("bastion.model_version"),
                         "drift": t.get("bastion.drift") == "true",
                         "performance_drop": bool(m.get("performance_drop", 0.0)),
                         "n_window": int(m.get("n_window", 0)),
                         "validation_failures": int(m.get("validation_failures", 0))})
    rows.sort(key=lambda r: r["at"], reverse=True)
    return rows[:limit]


def drift_report(registry: ModelRegistry, run_id: str,
                 tenants: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """One drift check's report (the monitor's JSON) and its plots as ``data:`` PNG URIs.

    Raises:
        ModelError: no drift run ``run_id`` of one of ``tenants``.
    """
    exp = registry.client.get_experiment_by_name(DRIFT_EXPERIMENT)
    try:
        run = registry.client.get_run(run_id)
    except MlflowException:
        run = None
    if (run is None or exp is None or run.info.experiment_id != exp.experiment_id
            or run.data.tags.get("bastion.tenant") not in tenants):
        raise ModelError(f"no drift report {run_id!r} in your tenants")
    paths = [a.path for a in registry.client.list_artifacts(run_id, "drift")]
    report: dict[str, Any] | None = None
    plots: dict[str, str] = {}
    for path in sorted(paths):
        if path.endswith(".json"):
            report = json.loads(_read(registry, run_id, path))
        elif path.endswith(".png"):
            name = Path(path).stem.rsplit("-", 1)[-1]
            plots[name] = ("data:image/png;base64,"
                           + base64.b64encode(_read(registry, run_id, path)).decode())
    if report is None:
        raise ModelError(f"drift run {run_id} has no report artifact")
    return {"run_id": run_id, "tenant": run.data.tags["bastion.tenant"], "report": report,
            "plots": plots}
