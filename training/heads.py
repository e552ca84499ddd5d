"""Fitting the stacked heads on frozen embeddings (measuring them: ``registry.evaluation``).

All heads train together as one (dim x n_heads) layer with a masked, soft-target binary
cross-entropy: each item teaches only the categories it is labelled for. Positives are
up-weighted by sqrt(neg/pos) per head so rare categories are not drowned, while scores stay
close to probabilities (a full neg/pos weight would inflate them). Labels may carry a weight
per (item, category), their aggregated confidence; with a validation split the fit keeps the
weights of the best validation loss and stops once it stops improving.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from bastion.core.model import HeadSpec, LinearHeads

__all__ = ["FitConfig", "fit_heads", "group_split", "pos_weights"]


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 400
    lr: float = 0.02
    weight_decay: float = 1e-4
    max_pos_weight: float = 10.0
    seed: int = 0
    eval_every: int = 20  # epochs between validation checks (full-batch: one step per epoch)
    patience: int = 5  # validation checks without improvement before stopping
    # L2 pull of each head toward the head it starts from (``init``, matched by key): what the
    # starting heads learned from data this run may not have (the shipped starter's
    # development sets) is kept unless the new labels outweigh it. 0 turns it off.
    anchor: float = 0.0


def group_split(groups: list[str], test_fraction: float = 0.2, salt: str = "bastion") -> np.ndarray:
    """Boolean test mask; a whole group (session, user, prompt) lands on one side only."""
    def bucket(g: str) -> float:
        return int(hashlib.sha256(f"{salt}:{g}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    return np.array([bucket(g) < test_fraction for g in groups], dtype=bool)


def pos_weights(targets: np.ndarray, weights: np.ndarray, cap: float) -> np.ndarray:
    """sqrt(neg/pos) per head from weighted soft counts, clipped to [1, cap]: rare categories
    are not drowned, and scores stay near probabilities."""
    pos = (targets * weights).sum(0)
    neg = ((1 - targets) * weights).sum(0)
    return np.clip(np.sqrt(neg / np.maximum(pos, 1.0)), 1.0, cap).astype(np.float32)


def fit_heads(
    emb: np.ndarray, targets: np.ndarray, mask: np.ndarray, specs: list[HeadSpec],
    cfg: FitConfig | None = None, *, weights: np.ndarray | None = None,
    val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    init: LinearHeads | None = None, history: list[dict[str, float]] | None = None,
) -> LinearHeads:
    """Fit every head at once (full-batch AdamW, cosine learning-rate schedule).

    Args:
        emb, targets, mask: training embeddings, soft targets and known-target mask.
        specs: one head per target column.
        weights: per (item, column) loss weight (label confidence); default the mask.
        val: (embeddings, targets, weights) of a validation split: enables early stopping.
        init: heads to start from (matched by key; other columns start at zero); with
            ``cfg.anchor`` the fit is also pulled toward them.
        history: filled with {"epoch", "train_loss", "val_loss"} at each validation check.
    """
    # torch here, not at the top, for start-up time: group_split is imported by the snapshot
    # and the starter commands, which should not pay for loading torch.
    import torch

    cfg = cfg or FitConfig()
    torch.manual_seed(cfg.seed)
    w_np = mask.astype(np.float32) if weights is None else weights * mask
    x = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    y = torch.from_numpy(targets.astype(np.float32))
    m = torch.from_numpy(w_np.astype(np.float32))
    pos_weight = torch.from_numpy(pos_weights(targets, w_np, cfg.max_pos_weight))
    layer = torch.nn.Linear(x.shape[1], y.shape[1])
    anchored: list[int] = []
    if init is not None:
        with torch.no_grad():
            for j, spec in enumerate(specs):
                if spec.key in init.index:
                    k = init.index[spec.key]
                    layer.weight[j] = torch.from_numpy(init.weight[:, k])
                    layer.bias[j] = float(init.bias[k])
                    anchored.append(j)
    anchor_w = layer.weight.detach().clone()[anchored] if anchored else None
    opt = torch.optim.AdamW(layer.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=pos_weight)

    def masked_loss(xx: torch.Tensor, yy: torch.Tensor, mm: torch.Tensor) -> torch.Tensor:
        per_head = mm.sum(0).clamp(min=1e-6)
        return ((loss_fn(layer(xx), yy) * mm).sum(0) / per_head)[mm.sum(0) > 0].mean()

    if val is not None:
        vx = torch.from_numpy(np.ascontiguousarray(val[0], dtype=np.float32))
        vy = torch.from_numpy(val[1].astype(np.float32))
        vm = torch.from_numpy(val[2].astype(np.float32))
    best, best_state, bad = float("inf"), None, 0
    for epoch in range(cfg.epochs):
        opt.zero_grad()
        loss = masked_loss(x, y, m)
        if cfg.anchor > 0 and anchor_w is not None:
            drift = ((layer.weight[anchored] - anchor_w) ** 2).sum(1).mean()
            (loss + cfg.anchor * drift).backward()
        else:
            loss.backward()
        opt.step()
        sched.step()
        if val is None or (epoch + 1) % cfg.eval_every and epoch + 1 != cfg.epochs:
            continue
        with torch.no_grad():
            v = float(masked_loss(vx, vy, vm))
        if history is not None:
            history.append({"epoch": epoch + 1, "train_loss": float(loss.detach()),
                            "val_loss": v})
        if v < best - 1e-5:
            best, bad = v, 0
            best_state = {k: t.detach().clone() for k, t in layer.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    if best_state is not None:
        layer.load_state_dict(best_state)
    w = layer.weight.detach().numpy().T.copy()
    b = layer.bias.detach().numpy().copy()
    return LinearHeads(specs, w, b)
