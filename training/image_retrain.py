"""Retraining the image heads on reviewed images: snapshot, Ray Train, MLflow, the gate.

The image backbone stays frozen (as in the text model's heads-only mode): the event log keeps
every image's pooled embedding (never the image), moderators' labels on image review items
(``core.labels``, modality image) say what it showed, and one logistic head per image
category of the tenants' policies (``media.image.categories``) is fitted on those embeddings
on a one-worker Ray Train ``TorchTrainer`` (the text heads' training,
``training.retrain.fit_heads_on_ray``), starting from the image model's ``@champion``
heads and pulled toward them. The version is logged to MLflow as the image model
(``registry.aliases.image_model_name``), enters as ``@challenger`` and is gated on the
snapshot's held-out reviewed images against the champion, or the shipped image model before
the first promotion (``registry.image_gate``). Serving's image deployment follows the image
model's ``@champion`` by itself.

Only embeddings from the backbone that serves now count (the event log records each image's
backbone): heads trained on one backbone's features mean nothing on another's.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import RegistryEmptyError
from bastion.core.events import EventLog
from bastion.core.image_backbones import create_served_backbone
from bastion.core.image_heads import ImageHeads, backbone_identity
from bastion.core.labels import LabelStore
from bastion.core.model import HeadSpec, LinearHeads
from bastion.core.policy import IMAGE_CLASSES, PolicySet
from bastion.core.runtime import start_ray
from bastion.core.settings import Settings
from bastion.registry.aliases import CHALLENGER, CHAMPION, image_model_name
from bastion.registry.evaluation import evaluate_heads
from bastion.registry.image_gate import ImageEvalSet, ImageLifecycle
from bastion.registry.lifecycle import GateRefused
from bastion.registry.store import ModelRegistry
from bastion.training.heads import FitConfig, group_split
from bastion.training.retrain import HEAD_ANCHOR, RetrainError, RetrainResult, fit_heads_on_ray
from bastion.training.snapshot import TEST_FRACTION, VAL_FRACTION, connected_groups

__all__ = ["ImageRetrainOptions", "ImageSnapshot", "build_image_snapshot", "image_heldout",
           "retrain_images", "served_backbone"]

Say = Callable[[str], None]


@dataclass(frozen=True)
class ImageRetrainOptions:
    promote: bool = True
    heads: FitConfig = field(default_factory=lambda: FitConfig(anchor=HEAD_ANCHOR))
    run_name: str | None = None  # default: derived from data + configuration
    reason: str | None = None

    def config_digest(self) -> str:
        cfg = {k: v for k, v in asdict(self).items() if k not in ("promote", "run_name",
                                                                   "reason")}
        return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()
                              ).hexdigest()[:8]


@dataclass
class ImageSnapshot:
    """Reviewed images with an embedding of the serving backbone, labelled and split."""

    keys: list[tuple[str, str]]
    embeddings: np.ndarray
    shipped: dict[str, np.ndarray]
    targets: np.ndarray
    mask: np.ndarray
    weights: np.ndarray
    categories: list[str]
    split: np.ndarray  # "train" | "val" | "test"
    fingerprint: str
    backbone: dict[str, Any]
    skipped: dict[str, int]  # why labelled images were left out, and how many

    def part(self, name: str) -> ImageEvalSet:
        idx = np.flatnonzero(self.split == name)
        return ImageEvalSet(
            keys=[self.keys[i] for i in idx], embeddings=self.embeddings[idx],
            shipped={k: v[idx] for k, v in self.shipped.items()}, targets=self.targets[idx],
            mask=self.mask[idx], categories=list(self.categories),
            backbone_sha256=self.backbone["sha256"])

    def summary(self) -> dict[str, Any]:
        splits = {s: int((self.split == s).sum()) for s in ("train", "val", "test")}
        per_cat = {c: {"labelled": int(self.mask[:, j].sum()),
                       "positive": int(((self.targets[:, j] >= 0.5) & self.mask[:, j]).sum())}
                   for j, c in enumerate(self.categories)}
        return {"n_items": len(self.keys), "splits": splits, "categories": per_cat,
                "fingerprint": self.fingerprint, "backbone": self.backbone,
                "skipped": self.skipped}


def served_backbone(settings: Settings) -> dict[str, Any]:
    """The identity (name, model sha256, embedding size) of the image backbone serving runs
    (``serving.image_backbone``)."""
    model = create_served_backbone(settings.serving.image_backbone,
                                   settings.serving.image_backbone_options, threads=1,
                                   tracking_uri=settings.tracking_uri)
    return backbone_identity(model.status())


def build_image_snapshot(settings: Settings, policy: PolicySet,
                         backbone: dict[str, Any]) -> ImageSnapshot:
    """Every image moderators labelled for an image category of the policy, joined with its
    logged embedding; split by connected group (session, user, the same PDQ hash)."""
    known = {c for tp in policy.tenants.values() for c in tp.media.image.categories}
    store = LabelStore(settings.database_url)
    try:
        rows = store.aggregated(images=True)
    finally:
        store.close()
    skipped = {"not an image category of the policy": 0, "no logged embedding": 0,
               "embedding of another backbone": 0}
    rows_by_item: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        if r.category not in known:
            skipped["not an image category of the policy"] += 1
            continue
        rows_by_item.setdefault((r.tenant, r.item_id), []).append(r)
    log = EventLog(settings.database_url)
    try:
        logged = log.latest(rows_by_item, modality="image")
    finally:
        log.close()
    keys, embs, shipped_rows, groups, item_rows = [], [], [], [], []
    for key, item in rows_by_item.items():
        ev = logged.get(key)
        if ev is None or ev.embedding is None:
            skipped["no logged embedding"] += 1
            continue
        media = ev.media or {}
        if media.get("backbone_sha256") != backbone["sha256"] or \
                len(ev.embedding) != int(backbone["dim"]):
            skipped["embedding of another backbone"] += 1
            continue
        keys.append(key)
        embs.append(ev.embedding)
        shipped_rows.append(media.get("image_scores") or {})
        groups.append([f"item:{key[0]}:{key[1]}"]
                      + ([f"session:{key[0]}:{ev.session_id}"] if ev.session_id else [])
                      + ([f"user:{key[0]}:{ev.user_id}"] if ev.user_id else [])
                      + ([f"pdq:{media['pdq']}"] if media.get("pdq") else []))
        item_rows.append(item)
    categories = sorted({r.category for item in item_rows for r in item})
    col = {c: j for j, c in enumerate(categories)}
    n = len(keys)
    targets = np.zeros((n, len(categories)), np.float32)
    mask = np.zeros((n, len(categories)), bool)
    weights = np.zeros((n, len(categories)), np.float32)
    for i, item in enumerate(item_rows):
        for r in item:
            targets[i, col[r.category]], mask[i, col[r.category]] = r.soft, True
            weights[i, col[r.category]] = r.weight
    names = connected_groups(groups) if groups else []
    test = group_split(names, TEST_FRACTION, salt="bastion-images")
    val = group_split(names, VAL_FRACTION, salt="bastion-images-val") & ~test
    split = np.where(test, "test", np.where(val, "val", "train"))
    digest = hashlib.sha256(backbone["sha256"].encode())
    for i, key in enumerate(keys):
        digest.update(json.dumps([key, targets[i].round(4).tolist(), mask[i].tolist(),
                                  weights[i].round(4).tolist()]).encode())
    return ImageSnapshot(
        keys=keys, embeddings=np.stack(embs).astype(np.float32) if embs else
        np.zeros((0, int(backbone["dim"])), np.float32),
        shipped={c: np.array([float(s[c]) for s in shipped_rows], np.float32)
                 for c in IMAGE_CLASSES  # the outputs this backbone has (a feature extractor:
                 if shipped_rows and all(c in s for s in shipped_rows)},  # none)
        targets=targets, mask=mask, weights=weights, categories=categories,
        split=np.asarray(split), fingerprint=digest.hexdigest(), backbone=backbone,
        skipped=skipped)


def image_heldout(settings: Settings, policy: PolicySet) -> ImageEvalSet:
    """The held-out reviewed images every gate of the image model measures on (``bastion
    promote --modality image`` as a retraining run's own promotion)."""
    return build_image_snapshot(settings, policy, served_backbone(settings)).part("test")


def _champion(registry: ModelRegistry, backbone: dict[str, Any], say: Say
              ) -> tuple[str, ImageHeads] | None:
    try:
        version = registry.by_alias(CHAMPION).version
    except RegistryEmptyError:
        say("No image heads are @champion yet: starting from scratch.")
        return None
    heads = ImageHeads.load(registry.download(version))
    if not heads.fits(backbone):
        say(f"Image heads v{version} were trained on another backbone: starting from scratch.")
        return None
    say(f"Starting from the image model's @champion version {version}.")
    return version, heads


def retrain_images(settings: Settings, policy: PolicySet, opts: ImageRetrainOptions,
                   say: Say = lambda _m: None) -> RetrainResult:
    """Train, register (as the image model's ``@challenger``), gate and (if the options say
    so) promote new image heads.

    Raises:
        RetrainError: no labelled image to train on, this exact run is already a version,
            or training failed (nothing registered; the MLflow run is FAILED).
    """
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    backbone = served_backbone(settings)
    t0 = time.perf_counter()
    snap = build_image_snapshot(settings, policy, backbone)
    timings["snapshot"] = time.perf_counter() - t0
    summary = snap.summary()
    say(f"Image snapshot {snap.fingerprint[:12]}: {summary['n_items']} reviewed image(s) of "
        f"backbone {backbone['name']}, splits {summary['splits']}; left out: "
        f"{ {k: v for k, v in snap.skipped.items() if v} or 'none'}.")
    if not int((snap.split == "train").sum()) or not snap.categories:
        raise RetrainError(
            "no reviewed image to train on: image heads learn from moderators' labels on "
            "image review items whose embedding the event log kept (label some in the "
            "console, or with 'bastion labels import')")
    registry = ModelRegistry(settings, image_model_name(settings.model_name))
    registry.ensure_reachable()
    run_name = opts.run_name or f"retrain-image-{snap.fingerprint[:10]}-{opts.config_digest()}"
    for v in registry.list_versions():
        if v.tags.get("bastion.train_run") == run_name:
            raise RetrainError(f"run {run_name} (this data and configuration) is already "
                               f"image model version {v.version}; label more images first")
    start_ray(settings)
    base = _champion(registry, backbone, say)
    keys = list(snap.categories) + [k for k in (base[1].categories if base else [])
                                    if k not in snap.categories]
    n = len(snap.keys)
    pad = len(keys) - len(snap.categories)
    targets = np.hstack([snap.targets, np.zeros((n, pad), np.float32)])
    mask = np.hstack([snap.mask, np.zeros((n, pad), bool)])
    weights = np.hstack([snap.weights, np.zeros((n, pad), np.float32)])
    run_id = registry.start_run(run_name, tags={
        "bastion.kind": "retrain-image", "bastion.data_fingerprint": snap.fingerprint,
        "bastion.train_run": run_name, "bastion.reason": opts.reason or "manual"})
    registry.client.log_dict(run_id, summary, "data/image_snapshot.json")
    say(f"MLflow run {run_id} ({run_name}); image heads on Ray Train (backbone frozen)...")
    try:
        t0 = time.perf_counter()
        tr, va = snap.split == "train", snap.split == "val"
        w = weights * mask
        heads, history = fit_heads_on_ray(
            settings, (snap.embeddings[tr], targets[tr], w[tr]),
            (snap.embeddings[va], targets[va], w[va]), keys, opts.heads,
            base[1].heads if base else None, run_name)
        timings["fit"] = time.perf_counter() - t0
        if base is not None:  # heads no label of this snapshot trains stay the champion's
            kept = [k for k in base[1].categories if k not in snap.categories]
            if kept:
                w, b = heads.weight.copy(), heads.bias.copy()
                for k in kept:
                    w[:, heads.index[k]] = base[1].heads.weight[:, base[1].heads.index[k]]
                    b[heads.index[k]] = base[1].heads.bias[base[1].heads.index[k]]
                heads = LinearHeads([HeadSpec.parse(k) for k in keys], w, b)
                say(f"Kept the champion's heads for {', '.join(kept)} (no label in this run).")
        test = snap.split == "test"
        scores = heads.score(snap.embeddings[test])
        metrics, curves = evaluate_heads(scores, targets[test], mask[test], keys)
        timings["train_total"] = time.perf_counter() - t_all
        model = ImageHeads(backbone=backbone, heads=heads, metadata={
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "categories": keys, "base_version": base[0] if base else None,
            "data": summary, "metrics": metrics, "curves": curves, "history": history,
            "train_run": run_name, "timings_s": {k: round(v, 2) for k, v in timings.items()}})
        with tempfile.TemporaryDirectory(prefix="bastion-image-retrain-") as tmp:
            model_dir = model.save(Path(tmp) / "bastion")
            flat = {f"{k}.{m}": float(v) for k, e in metrics.items() for m, v in e.items()
                    if isinstance(v, (int, float)) and v is not None}
            info = registry.log_version(
                model_dir, run_name=run_name, run_id=run_id,
                params={"n_items": n, "backbone": backbone["name"],
                        "base_version": model.metadata["base_version"],
                        **{f"heads.{k}": v for k, v in asdict(opts.heads).items()}},
                metrics=flat | {f"timing.{k}_s": float(v) for k, v in timings.items()},
                tags={"bastion.kind": "retrain-image",
                      "bastion.data_fingerprint": snap.fingerprint,
                      "bastion.backbone_sha256": backbone["sha256"],
                      "bastion.train_run": run_name, "bastion.reason": opts.reason or "manual"},
                alias=CHALLENGER, policy=policy.model_dump(mode="json", exclude_none=True))
    except BaseException as err:  # KeyboardInterrupt too: the run must not stay RUNNING
        registry.fail_run(run_id, f"{type(err).__name__}: {err}")
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        raise RetrainError(f"image heads run {run_name} failed; nothing was registered and "
                           f"the image @champion is untouched: {type(err).__name__}: "
                           f"{err}") from err
    version = info.version
    say(f"Registered image model version {version}; gating it on {int(test.sum())} held-out "
        "reviewed image(s)...")
    t0 = time.perf_counter()
    lifecycle = ImageLifecycle(settings, policy, eval_data=snap.part("test"), registry=registry)
    promoted = False
    try:
        if opts.promote:
            report = lifecycle.promote(version, reason=f"retraining run {run_name}",
                                       actor="bastion retrain").report
            promoted = True
        else:
            report = lifecycle.gate(version)
        passed, table = report.passed, report.to_table()
    except GateRefused as err:
        passed, table = False, str(err)
    timings["gate"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    return RetrainResult(
        run_id=run_id, run_name=run_name, mode="image-heads", version=version,
        promoted=promoted, gate_passed=passed, gate_table=table, snapshot=summary,
        metrics=metrics, timings_s={k: round(v, 2) for k, v in timings.items()},
        history=history)

