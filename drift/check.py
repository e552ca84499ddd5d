"""``bastion drift check``: each tenant's recent traffic against the champion's training data.

The reference is a sample of what the champion was trained on (its training snapshot, or the
packaged seed data for the starter model), embedded by the champion's encoder (through the
embedding cache) and scored by its heads under the tenant's policy. Reports go under
``<state_dir>/drift/`` (JSON and HTML) and into MLflow (experiment ``bastion-drift``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.policy import PolicySet
from core.settings import Settings
from drift.monitor import DriftReport, Reference, check_window, render_html

__all__ = ["champion_reference", "check_tenants", "drift_dir"]

EXPERIMENT = "bastion-drift"


def drift_dir(state_dir: Path) -> Path:
    return state_dir / "drift"


def _reference_texts(settings: Settings, meta: dict[str, Any], n: int, seed: int) -> list[str]:
    import pandas as pd

    fp = str(meta.get("data", {}).get("fingerprint", ""))
    snap = settings.state_dir / "snapshots" / f"{fp[:16]}.parquet"
    if fp and snap.exists():
        frame = pd.read_parquet(snap, columns=["text", "split"])
        texts = frame.loc[frame["split"] == "train", "text"].astype(str).tolist()
    else:  # the starter model: its packaged seed data
        from training.datasets import load_starter_data

        texts = load_starter_data(limit_per_source=max(n // 3, 50)).texts
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(texts), size=min(n, len(texts)), replace=False)
    return [texts[i] for i in sorted(idx)]


def champion_reference(settings: Settings, policy: PolicySet, tenants: list[str], *,
                       n: int = 2000, seed: int = 0) -> dict[str, Reference]:
    """Each tenant's reference under the current champion: one model load and one embedding
    pass serve every tenant; only the policy's categories and thresholds differ."""
    from core.decision import resolve_policy
    from core.model import ModerationModel
    from registry.store import CHAMPION, ModelRegistry
    from training.embcache import EmbeddingCache, embeddings_dir

    registry = ModelRegistry(settings)
    version = registry.by_alias(CHAMPION).version
    model = ModerationModel.load(registry.download(version),
                                 precision=settings.serving.precision)
    meta = dict(model.metadata, version=version)
    resolved = resolve_policy(policy, model.head_keys, meta)
    texts = _reference_texts(settings, meta, n, seed)
    cache = EmbeddingCache(embeddings_dir(settings.state_dir), model.encoder)
    try:
        emb, _ = cache.embed(texts)
    finally:
        cache.close()
    scores = model.heads.score(emb)
    return {t: Reference(
        texts=texts, embeddings=emb,
        scores={c.name: scores[:, c.column] for c in resolved[t].categories},
        thresholds={c.name: c.block_threshold for c in resolved[t].categories},
        model_version=version) for t in tenants}


def check_tenants(settings: Settings, policy: PolicySet, *, tenants: list[str] | None = None,
                  hours: float = 24.0, min_items: int = 100, false_alarm_rate: float = 0.01,
                  log_mlflow: bool = True) -> list[tuple[DriftReport | None, str]]:
    """Check each tenant's last ``hours`` of traffic; returns (report or None, message)."""
    from core.events import EventLog

    out: list[tuple[DriftReport | None, str]] = []
    log = EventLog(settings.events_db)
    try:
        windows: dict[str, list[dict[str, Any]]] = {}
        for tenant in tenants or sorted(policy.tenants):
            rows = list(log.read(tenant=tenant, since=time.time() - hours * 3600))
            if len(rows) < min_items:
                out.append((None, f"{tenant}: {len(rows)} item(s) in the last {hours:g} h, "
                                  f"fewer than {min_items}: not checked"))
            else:
                windows[tenant] = rows
        refs = champion_reference(settings, policy, list(windows)) if windows else {}
        for tenant, rows in windows.items():
            ref = refs[tenant]
            report = check_window(ref, rows, tenant=tenant, false_alarm_rate=false_alarm_rate)
            paths = _write(settings, report, render_html(report, ref, rows))
            if log_mlflow:
                _log(settings, report, paths)
            verdict = "DRIFT" if report.drift else "no drift"
            out.append((report, f"{tenant}: {verdict} over {len(rows)} item(s); failed: "
                                f"{', '.join(report.failed) or 'nothing'}; report {paths[1]}"))
    finally:
        log.close()
    return out


def _write(settings: Settings, report: DriftReport, page: str) -> tuple[Path, Path]:
    d = drift_dir(settings.state_dir)
    d.mkdir(parents=True, exist_ok=True)
    stem = f"{report.tenant}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(report.created_at))}"
    js, ht = d / f"{stem}.json", d / f"{stem}.html"
    js.write_text(json.dumps(report.to_json(), indent=2, default=str))
    ht.write_text(page)
    return js, ht


def _log(settings: Settings, report: DriftReport, paths: tuple[Path, Path]) -> None:
    from registry.store import ModelRegistry

    registry = ModelRegistry(settings)
    client = registry.client
    run = client.create_run(registry.experiment_id(EXPERIMENT),
                            run_name=f"drift-{report.tenant}",
                            tags={"bastion.tenant": report.tenant,
                                  "bastion.model_version": str(report.model_version),
                                  "bastion.drift": str(report.drift).lower()})
    rid = run.info.run_id
    client.log_metric(rid, "drift", float(report.drift))
    client.log_metric(rid, "n_window", float(report.n_window))
    client.log_metric(rid, "validation_failures", float(len(report.validation["failures"])))
    for p in paths:
        client.log_artifact(rid, str(p), "drift")
    client.set_terminated(rid)
