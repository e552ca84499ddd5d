"""The starter model: heads for the packaged encoder, built from real human-labelled sets and
shipped with the project, registered as the first champion in seconds.

``bastion starter build [--data DIR]`` trains the stacked heads on every available source
(``training.datasets.SOURCES``: the packaged ones and, where present, the development data in
``../shared/data``), measures them honestly (``registry.evaluation``: per category, per
source, across sources) and writes the artifact to ``training/starter_model/`` (heads.npz +
metadata.json: a few hundred KB). The artifact records each source with the SHA-256 of the
files it read, the command that built it, and its metrics; ``docs/starter-model.md`` is
generated from it. No text of any source is kept in it.

On a registry with no ``@champion``, ``bastion up`` registers the shipped artifact as
version 1 (``register_starter``). ``train_starter`` builds and registers in one go from
whatever data this machine has (tests and benchmarks use it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.cascade import FIRST_STAGE_FILE, cascade_status
from bastion.core.decision import threshold_for_precision
from bastion.core.embcache import EmbeddingCache
from bastion.core.encoders import Encoder, create_encoder
from bastion.core.errors import ModelError
from bastion.core.model import HeadSpec, LinearHeads, ModelMetadata, ModerationModel
from bastion.core.policy import PolicySet
from bastion.core.settings import Settings
from bastion.core.store import default_database_url
from bastion.registry.evaluation import (
    MIN_POSITIVES,
    binary_metrics,
    evaluate_version,
    metrics_by_source,
    pr_curve,
)
from bastion.registry.store import ModelRegistry
from bastion.training.cascade import fit_for_model
from bastion.training.datasets import (
    CATEGORIES,
    CATEGORY_DESCRIPTIONS,
    LabelledSet,
    available_multilingual_sources,
    available_sources,
    load_starter_data,
    source,
    source_fingerprint,
)
from bastion.training.heads import FitConfig, fit_heads, group_split
from bastion.training.reference import seed_reference

__all__ = [
    "SHIPPED_DIR",
    "MULTILINGUAL_DIR",
    "MULTILINGUAL_ENCODER",
    "build_starter",
    "encode_with_progress",
    "register_starter",
    "shipped_starter",
    "split_masks",
    "tenant_metrics",
    "train_starter",
    "write_starter",
]

ProgressFn = Callable[[str, int, int], None]
SHIPPED_DIR = Path(__file__).with_name("starter_model")
# The multilingual starter: heads on USE multilingual v3 (core.encoders.USEMultilingual), from
# the English sources and the Korean, French and Arabic ones (MULTILINGUAL_SOURCES); served
# beside the English champion as @multilingual for the languages it reads better.
MULTILINGUAL_DIR = Path(__file__).with_name("starter_model_multilingual")
MULTILINGUAL_ENCODER = "use-multilingual"
BLOCK_PRECISION = 0.9  # the precision a shipped block threshold must reach on held-out data
THIN_POSITIVES = 100  # fewer held-out positives from user-generated text: the category is thin
WEAK_AUROC = 0.7  # pooled held-out AUROC below this: the category ranks weakly
WEAK_CROSS_AUROC = 0.6  # a source left out of training ranked this close to chance: weak
LLM_SOURCES = {"pyrit"}  # LLM responses: never the only source of a category


def encode_with_progress(
    encoder: Encoder, texts: list[str], progress: ProgressFn | None = None, chunk: int = 512
) -> np.ndarray:
    out = []
    for start in range(0, len(texts), chunk):
        out.append(encoder.encode(texts[start:start + chunk]))
        if progress:
            progress("encoding", min(start + chunk, len(texts)), len(texts))
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), np.float32)


def split_masks(groups: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """train / validation (early stopping) / test masks; the test split is the one every
    version's gate reads (``group_split`` with its default salt)."""
    test = group_split(groups)
    val = group_split(groups, 0.125, salt="bastion-val") & ~test
    return ~test & ~val, val, test


def _fit(emb: np.ndarray, data: LabelledSet, train: np.ndarray, val: np.ndarray,
         keys: list[str], fit: FitConfig | None, weights: np.ndarray | None = None
         ) -> LinearHeads:
    cols = [data.categories.index(k) for k in keys]
    w = (data.loss_weights if weights is None else weights)[:, cols]
    y = data.targets[:, cols]
    return fit_heads(emb[train], y[train], w[train] > 0, [HeadSpec(k) for k in keys], fit,
                     weights=w[train], val=(emb[val], y[val], w[val]))


def _cross_source(emb: np.ndarray, data: LabelledSet, train: np.ndarray, val: np.ndarray,
                  fit: FitConfig | None, progress: ProgressFn | None) -> dict[str, Any]:
    """Train on every other source, measure on one: per category and per source that
    labelled it (with both classes), a head fitted without that source's labels for the
    category, measured on all of that source's labelled items."""
    src = np.asarray(data.sources)
    out: dict[str, Any] = {}
    jobs = []
    for c, cat in enumerate(data.categories):
        y = data.targets[:, c] >= 0.5
        labellers = sorted({s for s in src[data.mask[:, c]].tolist()})
        if len(labellers) < 2:
            continue
        for name in labellers:
            sel = data.mask[:, c] & (src == name)
            n_pos = int(y[sel].sum())
            if min(n_pos, int(sel.sum()) - n_pos) >= MIN_POSITIVES:
                jobs.append((c, cat, name, sel))
    for i, (c, cat, name, sel) in enumerate(jobs):
        if progress:
            progress("cross-source heads", i, len(jobs))
        weights = data.loss_weights.copy()
        weights[src == name, c] = 0.0  # neither its labels nor its weak negatives
        heads = _fit(emb, data, train & (weights[:, c] > 0), val & (weights[:, c] > 0), [cat],
                     fit, weights)
        s = heads.score(emb[sel])[:, 0]
        y = (data.targets[sel, c] >= 0.5).astype(np.float64)
        out.setdefault(cat, {})[name] = binary_metrics(y, s)
    if progress and jobs:
        progress("cross-source heads", len(jobs), len(jobs))
    return out


def _thresholds(curve: dict[str, list[float]] | None) -> dict[str, float | None]:
    block = threshold_for_precision(curve, BLOCK_PRECISION, min_support=20) if curve else None
    return {"block_p90": block}


def build_starter(
    data: LabelledSet,
    encoder: Encoder,
    *,
    embed: Callable[[list[str], ProgressFn | None], np.ndarray] | None = None,
    fit: FitConfig | None = None,
    progress: ProgressFn | None = None,
    cross_source: bool = True,
    sources: dict[str, dict[str, Any]] | None = None,
    command: str | None = None,
    first_stage: bool = True,
) -> ModerationModel:
    """Fit the stacked heads on the train split, measure them on the held-out split.

    Args:
        data: the labelled sources, concatenated (``load_starter_data``).
        encoder: the frozen backbone.
        embed: how texts become embeddings (default: encode them; e.g. the embedding cache).
        fit: head training settings.
        progress: called as (stage, done, total).
        cross_source: also measure each category on each source with heads trained without
            it (a dozen more fits of one head each).
        sources: what to record of each source (fingerprints; see ``describe_sources``).
        command: the command line that built it, recorded in the metadata.
        first_stage: also fit the cascade's first stage (``training.cascade``): calibrated
            on the validation split against these heads, measured on the test split.
    """
    t0 = time.perf_counter()
    emb = (embed(data.texts, progress) if embed is not None
           else encode_with_progress(encoder, data.texts, progress))
    t_encode = time.perf_counter() - t0
    train, val, test = split_masks(data.groups)
    keys = [c for c in data.categories
            if ((data.targets[train, data.categories.index(c)] >= 0.5)
                & data.mask[train, data.categories.index(c)]).any()]
    if progress:
        progress("fitting heads", 0, 1)
    t0 = time.perf_counter()
    heads = _fit(emb, data, train, val, keys, fit)
    t_fit = time.perf_counter() - t0
    if progress:
        progress("fitting heads", 1, 1)
    scores = heads.score(emb[test])
    tdata = data.subset(np.nonzero(test)[0])
    curves: dict[str, dict[str, list[float]]] = {}
    thresholds: dict[str, dict[str, float | None]] = {}
    for j, key in enumerate(keys):
        c = data.categories.index(key)
        known = tdata.mask[:, c]
        y = (tdata.targets[known, c] >= 0.5).astype(np.float64)
        if 0 < y.sum() < len(y):
            curves[key] = pr_curve(y, scores[known, j].astype(np.float64))
        thresholds[key] = _thresholds(curves.get(key))
    metrics = metrics_by_source(scores, tdata.targets, tdata.mask, tdata.sources,
                                data.categories, keys, thresholds)
    cross = _cross_source(emb, data, train, val, fit, progress) if cross_source else {}
    thin: dict[str, str] = {}
    for key in keys:
        ugc = {s: m for s, m in metrics[key].items() if s not in ("all", *LLM_SOURCES)}
        n_ugc = sum(m["n_pos"] for m in ugc.values())
        if not ugc:
            thin[key] = ("only LLM responses (PyRIT) are labelled for it: no user-generated "
                         "source")
        elif n_ugc < THIN_POSITIVES:
            thin[key] = f"{n_ugc} held-out positives from user-generated text"
    for name in CATEGORIES:
        if name not in keys:
            thin[name] = "no source labels it on this machine: no head"
    weak: dict[str, str] = {}
    for key in keys:
        pooled = metrics[key]["all"].get("auroc")
        crossed = {s: m["auroc"] for s, m in cross.get(key, {}).items() if "auroc" in m}
        why = []
        if pooled is not None and pooled < WEAK_AUROC:
            why.append(f"held-out AUROC {pooled:.2f}")
        low = {s: a for s, a in crossed.items() if a < WEAK_CROSS_AUROC}
        if low:
            why.append("near chance on a source it did not train on (" + ", ".join(
                f"{s} {a:.2f}" for s, a in sorted(low.items())) + ")")
        if why and key not in thin:
            weak[key] = "; ".join(why)
    src_counts = {s: int(n) for s, n in zip(*np.unique(data.sources, return_counts=True),
                                            strict=True)}
    meta: ModelMetadata = {
        "kind": "starter",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "categories": keys,
        "category_descriptions": {k: CATEGORY_DESCRIPTIONS.get(k, "") for k in keys},
        "thin": thin,
        "weak": weak,
        "data": {
            "fingerprint": data.fingerprint(),
            "sources": {name: {**(sources or {}).get(name, {}), "n_items": n}
                        for name, n in src_counts.items()},
            "n_train": int(train.sum()), "n_val": int(val.sum()), "n_test": int(test.sum()),
            "split": "sha256(group): 20% test, 10% validation; groups: tweet, post, comment, "
                     "PyRIT objective, Reddit user, normalised text",
            "negatives": "a held-out text counts for a category only where a human labelled "
                         "it for that category; weak negatives (benign text nobody judged "
                         "for the category) train with weight 0.3 and are never measured",
        },
        "metrics": metrics,
        "cross_source": cross,
        "thresholds": thresholds,
        "curves": curves,
        "timings_s": {"encode": round(t_encode, 2), "fit": round(t_fit, 2)},
    }
    model = ModerationModel(encoder=encoder, heads=heads, metadata=meta)
    if first_stage:
        if progress:
            progress("cascade first stage", 0, 1)
        fit_for_model(model, data, train, (np.flatnonzero(val), heads.score(emb[val])),
                      (np.flatnonzero(test), scores))
        if progress:
            progress("cascade first stage", 1, 1)
    return model


def describe_sources(names: list[str]) -> dict[str, dict[str, Any]]:
    """What the artifact records of each source: its fingerprint, kind, licence."""
    out = {}
    for name in names:
        src = source(name)
        out[name] = {"sha256": source_fingerprint(name), "packaged": src.packaged,
                     "licence": src.licence, "kind": src.kind,
                     "files": [p.name for p in src.files()]}
    return out


def write_starter(model: ModerationModel, out_dir: Path = SHIPPED_DIR) -> Path:
    """Write the artifact (heads.npz + metadata.json) to ``out_dir``, replacing what is there.
    The encoder's local path is not kept: it is found again from the encoder's registry
    name and checked by its fingerprint."""
    tmp = Path(tempfile.mkdtemp(prefix="bastion-starter-"))
    try:
        model.save(tmp)
        meta = json.loads((tmp / "metadata.json").read_text())
        meta["encoder"]["path"] = f"<{meta['encoder']['registry_name']} package>"
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / FIRST_STAGE_FILE).unlink(missing_ok=True)
        for name in ("heads.npz", "metadata.json", FIRST_STAGE_FILE):
            if (tmp / name).is_file():
                shutil.copy(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def shipped_starter(path: Path = SHIPPED_DIR) -> Path | None:
    """The shipped artifact's directory, if this checkout has one."""
    return path if (path / "metadata.json").is_file() and (path / "heads.npz").is_file() else None


def _flat_metrics(meta: ModelMetadata) -> dict[str, float]:
    out = {}
    for key, by_source in meta.get("metrics", {}).items():
        for src, m in by_source.items():
            for name in ("auroc", "ap", "ece"):
                if isinstance(m.get(name), (int, float)):
                    out[f"{key}.{src}.{name}"] = float(m[name])
    for name, value in (cascade_status(meta.get("cascade")) or {}).items():
        if isinstance(value, (int, float)):
            out[f"cascade.{name}"] = float(value)
    return out


def register_starter(settings: Settings, policy: PolicySet | None = None,
                     path: Path | None = None, alias: str | None = "champion",
                     encoder: Encoder | None = None) -> tuple[str, ModerationModel]:
    """Register a starter artifact (default: the shipped one) as a new version, under
    ``alias``. Seconds: nothing is trained or encoded.

    Raises:
        ModelError: there is no artifact, or its heads were trained on other encoder weights.
    """
    path = path or shipped_starter()
    if path is None:
        raise ModelError(f"no starter artifact in {SHIPPED_DIR}; build one with "
                         "'bastion starter build'")
    model = ModerationModel.load(path, encoder=encoder, precision=settings.serving.precision)
    meta = model.metadata
    registry = ModelRegistry(settings)
    with tempfile.TemporaryDirectory(prefix="bastion-model-") as tmp:
        saved = model.save(Path(tmp) / "bastion")
        info = registry.log_version(
            saved, run_name="starter",
            params={"kind": "starter", "encoder": model.encoder.identity["name"],
                    "built": meta.get("created_at"), "command": meta.get("command"),
                    "data_fingerprint": meta.get("data", {}).get("fingerprint")},
            metrics=_flat_metrics(meta),
            tags={"bastion.kind": "starter",
                  "bastion.data_fingerprint": str(meta.get("data", {}).get("fingerprint")),
                  "bastion.encoder_fingerprint": model.encoder.identity["fingerprint"],
                  "bastion.thin_categories": ", ".join(sorted(meta.get("thin", {}))),
                  "bastion.weak_categories": ", ".join(sorted(meta.get("weak", {})))},
            alias=alias,
            policy=policy.model_dump(mode="json", exclude_none=True) if policy else None,
        )
    if info.run_id:
        registry.log_reference(info.run_id, seed_reference())
    model.metadata["version"] = info.version
    return info.version, model


def tenant_metrics(model: ModerationModel, heldout: LabelledSet, scores: np.ndarray,
                   policy: PolicySet) -> dict[str, float]:
    """Held-out metrics per (tenant, category) under ``policy``, as MLflow metric names
    ``<tenant>.<category>.<metric>`` (the thresholds serving would use for this version)."""
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


def build_from_sources(
    settings: Settings, *, sources: list[str] | None = None,
    limit_per_source: int | None = None, davidson_limit: int | None = None,
    cache_dir: Path | None = None, encoder: Encoder | None = None,
    progress: ProgressFn | None = None, cross_source: bool = True,
    command: str | None = None, multilingual: bool = False,
) -> ModerationModel:
    """Load the sources, embed them through the embedding cache, build the starter
    (``multilingual``: on USE multilingual, the non-English sets included)."""
    names = sources or (available_sources()
                        + (available_multilingual_sources() if multilingual else []))
    if multilingual and encoder is None:
        encoder = create_encoder(MULTILINGUAL_ENCODER)
    data = load_starter_data(limit_per_source=limit_per_source,
                             davidson_limit=davidson_limit, sources=names)
    # fp32 whatever the CPU: the shipped heads must not depend on the machine that built them
    # (serving picks its own numerics when it loads them)
    encoder = encoder or create_encoder("minilm", precision="fp32")
    # --cache DIR: a database of its own there (the starter build may run without a platform)
    cache = EmbeddingCache(default_database_url(cache_dir) if cache_dir else settings.database_url,
                           encoder)
    try:
        return build_starter(
            data, encoder, embed=lambda texts, prog: cache.embed(texts, prog)[0],
            progress=progress, cross_source=cross_source, sources=describe_sources(names),
            command=command or " ".join(["python", *sys.argv]))
    finally:
        cache.close()


def train_starter(
    settings: Settings,
    *,
    limit_per_source: int | None = None,
    davidson_limit: int | None = None,
    progress: ProgressFn | None = None,
    encoder: Encoder | None = None,
    alias: str | None = "champion",
    policy: PolicySet | None = None,
    sources: list[str] | None = None,
) -> tuple[str, ModerationModel]:
    """Build a starter model from this machine's data and register it (as @champion by
    default); for tests and benchmarks, which want a model of a known, small size."""
    model = build_from_sources(settings, sources=sources, limit_per_source=limit_per_source,
                               davidson_limit=davidson_limit, encoder=encoder,
                               progress=progress, cross_source=False,
                               command="bastion.training.starter.train_starter")
    with tempfile.TemporaryDirectory(prefix="bastion-starter-") as tmp:
        path = write_starter(model, Path(tmp) / "starter")
        return register_starter(settings, policy, path=path, alias=alias,
                                encoder=model.encoder)


def artifact_digest(path: Path = SHIPPED_DIR) -> str:
    """SHA-256 of the shipped heads (names the artifact in docs and results)."""
    return hashlib.sha256((path / "heads.npz").read_bytes()).hexdigest()
