"""The starter model: heads trained on packaged real data, registered as the first champion.

It is a starting point for a tenant's own labels, not a finished moderation model: its
categories come from small public sets (see docs/starter-model.md for what it measured).
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.encoders import Encoder, create_encoder
from core.model import HeadSpec, ModerationModel
from core.policy import PolicySet
from core.settings import Settings
from training.datasets import LabelledSet, load_starter_data
from training.heads import FitConfig, evaluate_heads, fit_heads, group_split

__all__ = ["train_starter", "build_starter_model", "encode_with_progress"]

ProgressFn = Callable[[str, int, int], None]


def encode_with_progress(
    encoder: Encoder, texts: list[str], progress: ProgressFn | None = None, chunk: int = 512
) -> np.ndarray:
    out = []
    for start in range(0, len(texts), chunk):
        out.append(encoder.encode(texts[start:start + chunk]))
        if progress:
            progress("encoding", min(start + chunk, len(texts)), len(texts))
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), np.float32)


def build_starter_model(
    data: LabelledSet,
    encoder: Encoder,
    progress: ProgressFn | None = None,
    fit: FitConfig | None = None,
    embed: Callable[[list[str], ProgressFn | None], np.ndarray] | None = None,
) -> tuple[ModerationModel, LabelledSet, np.ndarray]:
    """Encode (through ``embed`` when given, e.g. the embedding cache), split by group, fit the
    stacked heads on train, measure them on test.

    Returns the model, the held-out split and the model's scores on it."""
    t0 = time.perf_counter()
    emb = (embed(data.texts, progress) if embed is not None
           else encode_with_progress(encoder, data.texts, progress))
    t_encode = time.perf_counter() - t0
    test = group_split(data.groups)
    specs = [HeadSpec(c) for c in data.categories]
    if progress:
        progress("fitting heads", 0, 1)
    heads = fit_heads(emb[~test], data.targets[~test], data.mask[~test], specs, fit)
    heldout_scores = heads.score(emb[test])
    metrics, curves = evaluate_heads(
        heldout_scores, data.targets[test], data.mask[test], heads.keys
    )
    if progress:
        progress("fitting heads", 1, 1)
    meta: dict[str, Any] = {
        "kind": "starter",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "categories": list(data.categories),
        "data": {
            "fingerprint": data.fingerprint(),
            "sources": dict(Counter(data.sources)),
            "n_train": int((~test).sum()),
            "n_test": int(test.sum()),
            "split": "sha256(group) < 0.2 -> test; groups: PyRIT objective, tweet id, SMS text",
        },
        "metrics": metrics,
        "curves": curves,
        "timings_s": {"encode": round(t_encode, 2)},
    }
    model = ModerationModel(encoder=encoder, heads=heads, metadata=meta)
    return model, data.subset(np.nonzero(test)[0]), heldout_scores


def tenant_metrics(model: ModerationModel, heldout: LabelledSet, scores: np.ndarray,
                   policy: PolicySet) -> dict[str, float]:
    """Held-out metrics per (tenant, category) under ``policy``, as MLflow metric names
    ``<tenant>.<category>.<metric>`` (the thresholds serving would use for this version)."""
    from registry.gate import evaluate_version

    evaluation = evaluate_version(
        str(model.metadata.get("version", "new")), model.head_keys, model.metadata, scores,
        heldout.targets, heldout.mask, heldout.categories, policy)
    out: dict[str, float] = {}
    for (tenant, category), ev in evaluation.categories.items():
        for name in ("precision_at_block", "recall_at_block", "auroc", "ece", "block_threshold"):
            value = getattr(ev, name)
            if value is not None:
                out[f"{tenant}.{category}.{name}"] = float(value)
    return out


def train_starter(
    settings: Settings,
    *,
    limit_per_source: int | None = None,
    davidson_limit: int | None = 8000,
    progress: ProgressFn | None = None,
    encoder: Encoder | None = None,
    alias: str | None = "champion",
    policy: PolicySet | None = None,
) -> tuple[str, ModerationModel]:
    """Train the starter model and register it (as @champion by default). Returns the version.

    With ``policy`` (the tenant policy it is trained for), the version also carries that
    policy's snapshot and held-out metrics per (tenant, category)."""
    from registry.store import ModelRegistry

    data = load_starter_data(limit_per_source=limit_per_source, davidson_limit=davidson_limit)
    encoder = encoder or create_encoder("minilm", precision=settings.serving.precision)
    from training.embcache import EmbeddingCache, embeddings_dir

    # Through the embedding cache: the first heads-only retraining then encodes only the
    # human-labelled texts, not the seed data again.
    cache = EmbeddingCache(embeddings_dir(settings.state_dir), encoder)
    try:
        model, heldout, heldout_scores = build_starter_model(
            data, encoder, progress, embed=lambda texts, prog: cache.embed(texts, prog)[0])
    finally:
        cache.close()
    registry = ModelRegistry(settings)
    with tempfile.TemporaryDirectory(prefix="bastion-model-") as tmp:
        path = model.save(Path(tmp) / "bastion")
        flat = {
            f"{key}.{name}": float(v)
            for key, entry in model.metadata["metrics"].items()
            for name, v in entry.items()
            if isinstance(v, (int, float)) and v is not None
        }
        info = registry.log_version(
            path,
            run_name="starter",
            params={
                "kind": "starter", "encoder": encoder.identity["name"],
                "precision": encoder.identity["precision"], "n_items": len(data),
                "limit_per_source": limit_per_source, "davidson_limit": davidson_limit,
            },
            metrics=flat,
            tags={
                "bastion.kind": "starter",
                "bastion.data_fingerprint": model.metadata["data"]["fingerprint"],
                "bastion.encoder_fingerprint": encoder.identity["fingerprint"],
            },
            alias=alias,
            policy=policy.model_dump(mode="json", exclude_none=True) if policy else None,
            extra_metrics=(
                tenant_metrics(model, heldout, heldout_scores, policy) if policy else None
            ),
        )
    model.metadata["version"] = info.version
    return info.version, model
