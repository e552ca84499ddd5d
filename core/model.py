"""The moderation model: one shared encoder and every category head stacked into one matrix.

Scoring a batch is one encoder pass plus one matrix product ``sigmoid(E @ W + b)`` that scores
every category of every tenant at once; a tenant-owned head is just another column. The model
is saved as one directory (``heads.npz`` + ``metadata.json``) that the registry versions; a
fine-tuned backbone travels inside it (``encoder/``), a stock one is named by its identity.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from bastion.core.cascade import FirstStage, Routing, Stage, merge_scores
from bastion.core.encoders import Encoder, create_encoder
from bastion.core.errors import ModelError
from bastion.core.numerics import create_numerics, numerics_names
from bastion.core.plugins import PluginRegistry

__all__ = [
    "HeadSpec",
    "LinearHeads",
    "ModelMetadata",
    "HeadsInfo",
    "ModerationModel",
    "create_heads",
    "register_heads",
    "head_kinds",
    "ARTIFACT_FORMAT",
]

ARTIFACT_FORMAT = 1
BUNDLED_ENCODER_DIR = "encoder"

_HEADS: PluginRegistry[LinearHeads] = PluginRegistry("head kind")
register_heads = _HEADS.register
head_kinds = _HEADS.names


class HeadsInfo(TypedDict):
    kind: str
    keys: list[str]  # one per column of the stacked heads: "<category>" or "<tenant>/<category>"


class ModelMetadata(TypedDict, total=False):
    """``metadata.json`` of a model artifact: the one definition every stage reads it by
    (serving, the gate, drift, the CLI). ``save`` fills ``format``, ``encoder`` and ``heads``;
    the registry adds ``version`` when it hands a version out."""

    format: int
    kind: str  # "starter", "retrain-heads" or "retrain-full"
    version: str
    created_at: str
    command: str | None
    train_run: str
    base_version: str | None
    categories: list[str]
    category_descriptions: dict[str, str]
    heads: HeadsInfo
    encoder: dict[str, Any]  # the encoder's identity (name, fingerprint, precision, ...)
    data: dict[str, Any]  # what it was trained on: fingerprint, sources, split sizes
    metrics: dict[str, dict[str, Any]]  # head key -> held-out metrics
    curves: dict[str, dict[str, list[float]]]  # head key -> held-out precision/recall curve
    thresholds: dict[str, dict[str, Any]]
    thin: dict[str, str]  # category -> why its data is thin
    weak: dict[str, str]  # category -> why it is weak
    cross_source: dict[str, Any]
    history: list[dict[str, Any]]
    scoring_check: dict[str, Any]
    timings_s: dict[str, float]
    cascade: dict[str, Any]  # the first stage: thresholds, flag levels, held-out agreement


def create_heads(kind: str, **cfg: Any) -> LinearHeads:
    return _HEADS.create(kind, **cfg)


@dataclass(frozen=True)
class HeadSpec:
    """One head: the category it scores and, for a tenant-owned head, its tenant."""

    category: str
    tenant: str | None = None

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.category}" if self.tenant else self.category

    @classmethod
    def parse(cls, key: str) -> HeadSpec:
        tenant, _, category = key.rpartition("/")
        return cls(category=category, tenant=tenant or None)


class LinearHeads:
    """Logistic heads over the shared embedding, stacked: ``W`` is (dim, n_heads)."""

    kind = "linear"

    def __init__(self, specs: list[HeadSpec], weight: np.ndarray, bias: np.ndarray) -> None:
        if weight.ndim != 2 or weight.shape[1] != len(specs) or bias.shape != (len(specs),):
            raise ModelError(
                f"head weights {weight.shape}/{bias.shape} do not match {len(specs)} head(s)"
            )
        keys = [s.key for s in specs]
        if len(set(keys)) != len(keys):
            raise ModelError(f"duplicate head keys in {keys}")
        self.specs = list(specs)
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.index = {k: i for i, k in enumerate(keys)}

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.specs]

    def score(self, emb: np.ndarray) -> np.ndarray:
        """Probabilities (n_items, n_heads) for every head at once."""
        logits = emb @ self.weight + self.bias
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez(path, weight=self.weight, bias=self.bias, keys=np.array(self.keys))

    @classmethod
    def load(cls, path: Path) -> LinearHeads:
        with np.load(path, allow_pickle=False) as z:
            keys = [str(k) for k in z["keys"]]
            return cls([HeadSpec.parse(k) for k in keys], z["weight"], z["bias"])


@register_heads("linear")
def _linear(**cfg: Any) -> LinearHeads:
    return LinearHeads(**cfg)


@dataclass
class ModerationModel:
    """Encoder + stacked heads + the metadata that travels with them, and optionally the
    cascade's first stage (``core.cascade``), which must score every head."""

    encoder: Encoder
    heads: LinearHeads
    metadata: ModelMetadata = field(default_factory=lambda: ModelMetadata())
    first_stage: FirstStage | None = None

    def __post_init__(self) -> None:
        if self.first_stage is not None:
            missing = sorted(set(self.heads.keys) - set(self.first_stage.keys))
            if missing:
                raise ModelError(f"the first stage does not score head(s) {missing}; refit "
                                 "it with the heads or leave it out (cascade off)")

    @property
    def head_keys(self) -> list[str]:
        return self.heads.keys

    def score(self, texts: list[str], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (n, dim) and head probabilities (n, n_heads)."""
        emb = self.encoder.encode(texts, batch_size=batch_size)
        return emb, self.heads.score(emb)

    def route(self, texts: list[str], rng: np.random.Generator | None = None) -> Routing | None:
        """The first stage's routing of ``texts`` (None: this version has no first stage)."""
        return None if self.first_stage is None else self.first_stage.route(texts, rng)

    def merge(self, routing: Routing, full_scores: np.ndarray) -> np.ndarray:
        """Scores (n, n_heads) of a routed call from the full model's scores of
        ``routing.to_full`` (see ``core.cascade.merge_scores``)."""
        assert self.first_stage is not None
        columns = np.array([self.heads.index[k] for k in self.first_stage.keys])
        return merge_scores(routing, full_scores, columns, len(self.heads.keys))

    def score_cascade(self, texts: list[str], rng: np.random.Generator | None = None,
                      batch_size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """In process, through the cascade: embeddings of the items the full model scored
        (rows in ``stage != Stage.first`` order), scores (n, n_heads), stage per item."""
        routing = self.route(texts, rng)
        if routing is None:
            emb, scores = self.score(texts, batch_size)
            return emb, scores, np.full(len(texts), Stage.full, np.int8)
        emb, full = self.score([texts[i] for i in routing.to_full], batch_size)
        return emb, self.merge(routing, full), routing.stage

    def save(self, directory: str | Path, bundle_encoder: bool = False) -> Path:
        """Write the artifact.

        Args:
            directory: where to write it (created if missing).
            bundle_encoder: copy the encoder's weights into ``<directory>/encoder`` (a
                fine-tuned backbone exists nowhere else). An encoder already there is bundled
                either way. Loading rebuilds a bundled encoder from the artifact itself.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.heads.save(directory / "heads.npz")
        meta: dict[str, Any] = dict(self.metadata)
        meta.pop("cascade", None)
        if self.first_stage is not None:
            meta["cascade"] = self.first_stage.save(directory)
        identity = dict(self.encoder.identity)
        target = directory / BUNDLED_ENCODER_DIR
        bundled = Path(identity["path"]).resolve() == target.resolve()
        if bundle_encoder and not bundled:
            shutil.copytree(identity["path"], target, dirs_exist_ok=True)
            bundled = True
        meta.update(
            format=ARTIFACT_FORMAT,
            encoder=identity | {
                "registry_name": meta.get("encoder", {}).get("registry_name", identity["name"]),
                "bundled": bundled,
            } | ({"path": BUNDLED_ENCODER_DIR} if bundled else {}),
            heads={"kind": self.heads.kind, "keys": self.heads.keys},
        )
        (directory / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(
        cls, directory: str | Path, encoder: Encoder | None = None, **encoder_overrides: Any
    ) -> ModerationModel:
        """Load a saved model. The encoder is rebuilt from its identity and must have the same
        weights fingerprint the heads were trained on; pass ``encoder`` to share one."""
        directory = Path(directory)
        meta_path = directory / "metadata.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise ModelError(
                f"{directory}: no metadata.json; not a Bastion model artifact"
            ) from None
        except json.JSONDecodeError as err:
            raise ModelError(f"{meta_path}: corrupt metadata ({err})") from None
        if meta.get("format") != ARTIFACT_FORMAT:
            raise ModelError(
                f"{directory}: artifact format {meta.get('format')!r}, this Bastion reads "
                f"{ARTIFACT_FORMAT}"
            )
        try:
            heads = LinearHeads.load(directory / "heads.npz")
        except (OSError, ValueError, KeyError) as err:
            raise ModelError(f"{directory}/heads.npz: cannot load heads ({err})") from None
        ident = meta["encoder"]
        if encoder is None:
            cfg = {
                "max_length": ident["max_length"],
                "normalize": ident["normalize"],
                "precision": ident["precision"],
            }
            if (ident["precision"] in numerics_names()
                    and create_numerics(ident["precision"]).available() is not None):
                # the numerics it was saved with is a record of that machine (bf16 on an
                # AVX-512 host), not a demand on this one: fp32 unless the caller says otherwise
                cfg["precision"] = "fp32"
            if ident.get("bundled"):
                cfg["path"] = str(directory / BUNDLED_ENCODER_DIR)
            elif ident["registry_name"] != "minilm":
                cfg["path"] = ident["path"]
            cfg.update(encoder_overrides)
            encoder = create_encoder(ident["registry_name"], **cfg)
        if encoder.identity["fingerprint"] != ident["fingerprint"]:
            raise ModelError(
                f"{directory}: the encoder at {encoder.identity['path']} has other weights "
                "than the heads were trained on; install the encoder named in metadata.json"
            )
        first = FirstStage.load(directory, meta["cascade"]) if meta.get("cascade") else None
        return cls(encoder=encoder, heads=heads, metadata=meta, first_stage=first)
