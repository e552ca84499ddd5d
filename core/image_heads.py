"""Image heads: per-category logistic heads on an image backbone's pooled embedding.

The image backbone (``core.image_backbones``) gives every image an L2-normalised embedding;
moderators' labels on image review items train one head per image category on it
(``training.image_retrain``), which the gate measures on held-out reviewed images
(``registry.image_gate``) and the image deployment serves once it is ``@champion`` of the
image model (``serving.media``). A version is bound to the backbone it was trained on: its
``backbone`` names it and its model file's sha256, and a deployment serving another backbone
ignores it (the backbone's own categories keep serving).

On disk: ``metadata.json`` (``kind: image-heads``, the backbone, the categories, metrics) and
``heads.npz``, the same stacked-heads format as the text model's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import ModelError
from bastion.core.model import HeadSpec, LinearHeads

__all__ = ["IMAGE_HEADS_KIND", "ImageHeads", "backbone_identity"]

IMAGE_HEADS_KIND = "image-heads"


def backbone_identity(status: dict[str, Any]) -> dict[str, Any]:
    """What binds image heads to a backbone: its name, its model file's sha256 and its
    embedding size, from the backbone's ``status()``."""
    return {"name": str(status["name"]), "sha256": str(status["sha256"]),
            "dim": int(status["dim"])}


@dataclass
class ImageHeads:
    """Stacked heads (one per image category) on one backbone's embedding."""

    backbone: dict[str, Any]  # backbone_identity()
    heads: LinearHeads
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        dim = int(self.backbone["dim"])
        if self.heads.weight.shape[0] != dim:
            raise ModelError(f"image heads of input size {self.heads.weight.shape[0]} do not "
                             f"fit backbone {self.backbone['name']} (embedding size {dim})")

    @property
    def categories(self) -> list[str]:
        return self.heads.keys

    def fits(self, identity: dict[str, Any]) -> bool:
        """Whether these heads were trained on the backbone ``identity`` describes."""
        return (identity.get("sha256") == self.backbone["sha256"]
                and int(identity.get("dim", -1)) == int(self.backbone["dim"]))

    def score(self, emb: np.ndarray) -> np.ndarray:
        """(n, n_categories) probabilities for (n, dim) embeddings."""
        return self.heads.score(np.asarray(emb, np.float32).reshape(-1, self.heads.weight.shape[0]))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.heads.save(path / "heads.npz")
        meta = {**self.metadata, "kind": IMAGE_HEADS_KIND, "backbone": self.backbone,
                "heads": {"kind": "linear", "keys": self.categories}}
        (path / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True,
                                                       default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ImageHeads:
        path = Path(path)
        try:
            meta = json.loads((path / "metadata.json").read_text())
        except (OSError, ValueError) as err:
            raise ModelError(f"{path} holds no image heads: {err}") from None
        if meta.get("kind") != IMAGE_HEADS_KIND:
            raise ModelError(f"{path} is a {meta.get('kind', 'text')!r} model, not image heads")
        heads = LinearHeads.load(path / "heads.npz")
        if heads.keys != [HeadSpec.parse(k).key for k in meta["heads"]["keys"]]:
            raise ModelError(f"{path}: heads.npz and metadata.json name different categories")
        return cls(backbone=dict(meta["backbone"]), heads=heads, metadata=meta)
