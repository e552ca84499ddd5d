"""``bastion drift check``: each tenant's recent traffic against the champion's training data.

The reference is a sample of what the champion was trained on, logged with its version
(``bastion.registry.store.REFERENCE_ARTIFACT``: the training snapshot's train split, or the
seed data for the starter model), embedded by the champion's encoder (through the embedding
cache) and scored by its heads under the tenant's policy. Reports go under
``<state_dir>/drift/`` (JSON and HTML) and into MLflow (experiment ``bastion-drift``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.decision import resolve_policy
from bastion.core.embcache import EmbeddingCache
from bastion.core.errors import ModelError
from bastion.core.events import EventLog
from bastion.core.labels import LabelStore
from bastion.core.model import ModelMetadata, ModerationModel
from bastion.core.policy import PolicySet
from bastion.core.settings import Settings
from bastion.drift.media import MEDIA_MODALITIES, check_media_window
from bastion.drift.monitor import (
    DriftReport,
    Reference,
    check_window,
    render_html,
    report_plots,
)
from bastion.drift.triggers import gather_signals, maybe_retrain
from bastion.drift.validation import suite_version
from bastion.registry.store import CHAMPION, DRIFT_EXPERIMENT, ModelRegistry

__all__ = ["champion_reference", "check_tenants", "drift_dir", "monitor_pass"]

EXPERIMENT = DRIFT_EXPERIMENT  # the MLflow experiment of drift reports (registry.store)
log = logging.getLogger(__name__)


def drift_dir(state_dir: Path) -> Path:
    return state_dir / "drift"


def _reference_texts(registry: ModelRegistry, version: str, n: int, seed: int) -> list[str]:
    texts = registry.reference_texts(version)
    if not texts:
        raise ModelError(f"model version {version} has no drift reference ({registry.name}, "
                         "artifact drift/reference_texts.json); 'bastion up' adds one to the "
                         "champion, or retrain")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(texts), size=min(n, len(texts)), replace=False)
    return [texts[i] for i in sorted(idx)]


def _suite_path(settings: Settings, version: str, tenant: str, categories: list[str]) -> Path:
    """Where the tenant's expectation suite for this model version is kept."""
    digest = hashlib.sha256("-".join(sorted(categories)).encode()).hexdigest()[:8]
    return drift_dir(settings.state_dir) / "suites" / f"v{version}-{tenant}-{digest}.json"


def _keep_suite(path: Path, registry: ModelRegistry, version: str, run_id: str | None, tenant: str,
                suite: dict[str, Any]) -> None:
    """Store a newly built suite beside the drift reports and with the version's MLflow run
    (``drift/``), so every later check of the same champion validates against the very same
    suite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(suite, indent=1, default=str))
    tmp.replace(path)
    if run_id:
        try:
            registry.client.log_artifact(run_id, str(path), "drift")
            registry.client.set_model_version_tag(
                registry.name, version, f"bastion.drift_suite.{tenant}", suite_version(suite))
        except Exception as err:  # noqa: BLE001 - the suite on disk is what checks use
            log.warning("could not keep the drift suite with MLflow run %s: %s", run_id, err)


def champion_reference(settings: Settings, policy: PolicySet, tenants: list[str], *,
                       n: int = 2000, seed: int = 0) -> dict[str, Reference]:
    """Each tenant's reference under the current champion: one model load and one embedding
    pass serve every tenant; only the policy's categories and thresholds differ. Each
    tenant's expectation suite is the one stored with this model version."""

    registry = ModelRegistry(settings)
    info = registry.by_alias(CHAMPION)
    version = info.version
    model = ModerationModel.load(registry.download(version),
                                 precision=settings.serving.precision)
    meta: ModelMetadata = {**model.metadata, "version": version}
    resolved = resolve_policy(policy, model.head_keys, meta)
    texts = _reference_texts(registry, version, n, seed)
    cache = EmbeddingCache(settings.database_url, model.encoder)
    try:
        emb, _ = cache.embed(texts)
    finally:
        cache.close()
    scores = model.heads.score(emb)
    curves = meta.get("curves", {})
    refs: dict[str, Reference] = {}
    for t in tenants:
        cats = resolved[t].categories
        path = _suite_path(settings, version, t, [c.name for c in cats])
        stored = json.loads(path.read_text()) if path.exists() else {}
        ref = Reference(  # builds the suite only when none is stored for this version
            texts=texts, embeddings=emb,
            scores={c.name: scores[:, c.column] for c in cats},
            thresholds={c.name: c.flag_threshold if c.flag_threshold is not None else 0.5
                        for c in cats},
            model_version=version, suite=stored,
            curves={c.name: curves[c.head_key] for c in cats if c.head_key in curves},
            review_thresholds={c.name: c.review_threshold for c in cats
                               if c.review_threshold is not None})
        if not stored:
            _keep_suite(path, registry, version, info.run_id, t, ref.suite)
        refs[t] = ref
    return refs


def _reviewed_evidence(settings: Settings, policy: PolicySet, version: str | None
                       ) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """tenant -> category -> (scores, aggregated labels) of reviewed items ``version`` scored.
    They are read from the label table the review queue writes."""
    store = LabelStore(settings.database_url)
    try:
        evidence = store.reviewed(model_version=version)
    finally:
        store.close()
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for (tenant, category), pair in evidence.items():
        if tenant in policy.tenants and category in policy.tenants[tenant].categories:
            out.setdefault(tenant, {})[category] = pair
    return out


def check_tenants(settings: Settings, policy: PolicySet, *, tenants: list[str] | None = None,
                  hours: float | None = None, min_items: int | None = None,
                  false_alarm_rate: float | None = None, log_mlflow: bool = True,
                  modalities: tuple[str, ...] = ("text", *MEDIA_MODALITIES),
                  ) -> list[tuple[DriftReport | None, str]]:
    """Check each tenant's last ``hours`` of traffic; returns (report or None, message), for
    its texts and, where it sent any, for its images and clips (``modalities``). Unset window,
    size and rate come from the policy's ``drift`` section."""
    dp = policy.drift
    hours = dp.window_hours if hours is None else hours
    min_items = dp.min_items if min_items is None else min_items
    false_alarm_rate = dp.false_alarm_rate if false_alarm_rate is None else false_alarm_rate
    out: list[tuple[DriftReport | None, str]] = []
    log_ = EventLog(settings.database_url)
    try:
        windows: dict[str, list[dict[str, Any]]] = {}
        for tenant in tenants or sorted(policy.tenants):
            # the monitor reads the records' fields by name (vars: no copy of the embeddings)
            since = time.time() - hours * 3600
            rows = [vars(e) for e in log_.read(tenant=tenant, since=since)]
            sent = {r.get("modality") for r in rows}
            for modality in (m for m in MEDIA_MODALITIES if m in modalities and m in sent):
                # images and voice: against the tenant's window before
                earlier = [vars(e) for e in log_.read(tenant=tenant, since=since - hours * 3600,
                                                      until=since, modality=modality)]
                out.append(_check_media(settings, tenant, modality, earlier, rows, min_items,
                                        false_alarm_rate, log_mlflow))
            rows = [r for r in rows if r.get("modality", "text") == "text"]
            if "text" not in modalities:
                continue
            if len(rows) < min_items:
                out.append((None, f"{tenant}: {len(rows)} item(s) in the last {hours:g} h, "
                                  f"fewer than {min_items}: not checked"))
            else:
                windows[tenant] = rows
        refs = champion_reference(settings, policy, list(windows)) if windows else {}
        version = next(iter(refs.values())).model_version if refs else None
        evidence = _reviewed_evidence(settings, policy, version) if refs else {}
        for tenant, rows in windows.items():
            ref = refs[tenant]
            report = check_window(ref, rows, tenant=tenant, false_alarm_rate=false_alarm_rate,
                                  reviewed=evidence.get(tenant))
            plots = report_plots(ref, rows)
            paths = _write(settings, report, render_html(report, plots), plots)
            if log_mlflow:
                _log(settings, report, paths)
            verdict = ("DRIFT" if report.drift else
                       "PRECISION DROP" if report.performance_drop else "no drift")
            out.append((report, f"{tenant}: {verdict} over {len(rows)} item(s); failed: "
                                f"{', '.join(report.failed) or 'nothing'}; report {paths[1]}"))
    finally:
        log_.close()
    return out


def _check_media(settings: Settings, tenant: str, modality: str,
                 earlier: list[dict[str, Any]], rows: list[dict[str, Any]], min_items: int,
                 false_alarm_rate: float, log_mlflow: bool) -> tuple[DriftReport | None, str]:
    """One modality's check of a tenant: this window's items against the window before's."""
    ref = [r for r in earlier if r.get("modality") == modality]
    win = [r for r in rows if r.get("modality") == modality]
    if len(win) < min_items or len(ref) < min_items:
        return None, (f"{tenant} {modality}: {len(win)} item(s) in the window and {len(ref)} "
                      f"in the one before, fewer than {min_items}: not checked")
    report = check_media_window(ref, win, tenant=tenant, modality=modality,
                                false_alarm_rate=false_alarm_rate)
    paths = _write(settings, report, render_html(report, {}), {})
    if log_mlflow:
        _log(settings, report, paths)
    verdict = "DRIFT" if report.drift else "no drift"
    return report, (f"{tenant} {modality}: {verdict} over {len(win)} item(s) against the "
                    f"{len(ref)} before; failed: {', '.join(report.failed) or 'nothing'}; "
                    f"report {paths[1]}")


def _write(settings: Settings, report: DriftReport, page: str,
           plots: dict[str, str]) -> list[Path]:
    """The report as JSON, as a page and its plots as PNGs (``<tenant>-<UTC time>.*``); the
    JSON and the page come first."""
    d = drift_dir(settings.state_dir)
    d.mkdir(parents=True, exist_ok=True)
    kind = "" if report.modality == "text" else f"{report.modality}-"
    stem = f"{report.tenant}-{kind}{time.strftime('%Y%m%dT%H%M%S', time.gmtime(report.created_at))}"
    js, ht = d / f"{stem}.json", d / f"{stem}.html"
    js.write_text(json.dumps(report.to_json(), indent=2, default=str))
    ht.write_text(page)
    pngs = []
    for name, b64 in plots.items():
        png = d / f"{stem}-{name}.png"
        png.write_bytes(base64.b64decode(b64))
        pngs.append(png)
    return [js, ht, *pngs]


def _log(settings: Settings, report: DriftReport, paths: list[Path]) -> None:
    registry = ModelRegistry(settings)
    client = registry.client
    run = client.create_run(registry.experiment_id(DRIFT_EXPERIMENT),
                            run_name=f"drift-{report.tenant}",
                            tags={"bastion.tenant": report.tenant,
                                  "bastion.model_version": str(report.model_version),
                                  "bastion.drift": str(report.drift).lower(),
                                  "bastion.modality": report.modality})
    rid = run.info.run_id
    client.log_metric(rid, "drift", float(report.drift))
    client.log_metric(rid, "n_window", float(report.n_window))
    client.log_metric(rid, "validation_failures", float(len(report.validation["failures"])))
    client.log_metric(rid, "performance_drop", float(report.performance_drop))
    for p in paths:
        client.log_artifact(rid, str(p), "drift")
    client.set_terminated(rid)


def monitor_pass(settings: Settings, policy: PolicySet, *, dashboard_url: str | None,
                 tenants: list[str] | None = None, hours: float | None = None,
                 min_items: int | None = None, false_alarm_rate: float | None = None,
                 say: Callable[[str], None] = lambda _m: None) -> tuple[
                     list[tuple[DriftReport | None, str]], Any, Any]:
    """One pass of the monitor: check every tenant, gather the trigger signals and, where a
    Ray cluster runs (``dashboard_url``), let the policy's rules start a retraining job.
    Returns (results, signals, trigger outcome or None when no cluster was given)."""
    results = check_tenants(settings, policy, tenants=tenants, hours=hours,
                            min_items=min_items, false_alarm_rate=false_alarm_rate)
    for _r, message in results:
        say(message)
    signals = gather_signals(settings, [r for r, _m in results])
    outcome = None
    if dashboard_url is not None:
        outcome = maybe_retrain(settings, policy, signals, dashboard_url, say=say)
    return results, signals, outcome
