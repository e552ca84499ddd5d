"""Fitting the stacked heads on frozen embeddings, and measuring them on held-out data.

All heads train together as one (dim x n_heads) layer with a masked, soft-target binary
cross-entropy: each item teaches only the categories it is labelled for. Positives are
up-weighted by sqrt(neg/pos) per head so rare categories are not drowned, while scores stay
close to probabilities (a full neg/pos weight would inflate them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.model import HeadSpec, LinearHeads

__all__ = ["FitConfig", "fit_heads", "evaluate_heads", "group_split", "pr_curve"]


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 400
    lr: float = 0.02
    weight_decay: float = 1e-4
    max_pos_weight: float = 10.0
    seed: int = 0


def group_split(groups: list[str], test_fraction: float = 0.2, salt: str = "bastion") -> np.ndarray:
    """Boolean test mask; a whole group (session, user, prompt) lands on one side only."""
    def bucket(g: str) -> float:
        return int(hashlib.sha256(f"{salt}:{g}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    return np.array([bucket(g) < test_fraction for g in groups], dtype=bool)


def fit_heads(
    emb: np.ndarray, targets: np.ndarray, mask: np.ndarray, specs: list[HeadSpec],
    cfg: FitConfig | None = None,
) -> LinearHeads:
    import torch

    cfg = cfg or FitConfig()
    torch.manual_seed(cfg.seed)
    x = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    y = torch.from_numpy(targets.astype(np.float32))
    m = torch.from_numpy(mask.astype(np.float32))
    pos = (y * m).sum(0)
    neg = ((1 - y) * m).sum(0)
    pos_weight = torch.sqrt(neg / pos.clamp(min=1.0)).clamp(1.0, cfg.max_pos_weight)
    layer = torch.nn.Linear(x.shape[1], y.shape[1])
    opt = torch.optim.AdamW(layer.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=pos_weight)
    per_head = m.sum(0).clamp(min=1.0)
    for _ in range(cfg.epochs):
        opt.zero_grad()
        loss = ((loss_fn(layer(x), y) * m).sum(0) / per_head).mean()
        loss.backward()
        opt.step()
        sched.step()
    w = layer.weight.detach().numpy().T.copy()
    b = layer.bias.detach().numpy().copy()
    return LinearHeads(specs, w, b)


def pr_curve(y: np.ndarray, s: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    """Precision, recall and predicted-positive count at ascending thresholds."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    n_pred = np.arange(1, len(s) + 1)
    # keep the last index of each distinct score (ties decided together)
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s) - 1]
    if len(last) > max_points:
        last = last[np.unique(np.linspace(0, len(last) - 1, max_points).round().astype(int))]
    total_pos = max(float(y.sum()), 1.0)
    thr = s_sorted[last][::-1]
    prec = (tp[last] / n_pred[last])[::-1]
    rec = (tp[last] / total_pos)[::-1]
    return {
        "threshold": [round(float(v), 6) for v in thr],
        "precision": [round(float(v), 6) for v in prec],
        "recall": [round(float(v), 6) for v in rec],
        "n_pred": [int(v) for v in n_pred[last][::-1]],
    }


def evaluate_heads(
    scores: np.ndarray, targets: np.ndarray, mask: np.ndarray, keys: list[str],
    target_precision: float = 0.9, review_recall: float = 0.9,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, list[float]]]]:
    """Per-head held-out metrics and PR curves (labels binarised at a soft target of 0.5)."""
    from sklearn.metrics import roc_auc_score

    from core.decision import threshold_for_precision, threshold_for_recall

    metrics: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    for j, key in enumerate(keys):
        known = mask[:, j]
        y = (targets[known, j] >= 0.5).astype(np.float64)
        s = scores[known, j].astype(np.float64)
        n_pos = int(y.sum())
        entry: dict[str, Any] = {"n": int(known.sum()), "n_pos": n_pos}
        if n_pos == 0 or n_pos == len(y):
            entry["note"] = "held-out set has one class only; no metrics"
            metrics[key] = entry
            continue
        curve = pr_curve(y, s)
        curves[key] = curve
        entry["auroc"] = round(float(roc_auc_score(y, s)), 4)
        entry["prevalence"] = round(n_pos / len(y), 4)
        block = threshold_for_precision(curve, target_precision)
        entry[f"block_threshold_at_p{int(target_precision * 100)}"] = block
        if block is not None:
            pred = s >= block
            tp = float((pred & (y == 1)).sum())
            entry["precision_at_block"] = round(float(tp / max(pred.sum(), 1)), 4)
            entry["recall_at_block"] = round(tp / n_pos, 4)
        review = threshold_for_recall(curve, review_recall)
        entry[f"review_threshold_at_r{int(review_recall * 100)}"] = review
        if review is not None:
            pred = s >= review
            tp = float((pred & (y == 1)).sum())
            entry["precision_at_review"] = round(float(tp / max(pred.sum(), 1)), 4)
            entry["recall_at_review"] = round(tp / n_pos, 4)
        metrics[key] = entry
    return metrics, curves
