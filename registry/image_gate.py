"""The promotion gate of the image heads: the text gate's checks, on held-out reviewed images.

A version of the image model (``core.image_heads``) is measured as serving would use it: per
(tenant, image category) of every tenant that accepts images, its trained head's score where
it has a head for the category, else the shipped image model's ``source`` output (what
serving falls back to, ``core.media_decision.image_verdict``). The champion is the image
model's ``@champion``, or, before the first promotion, the shipped model alone: a first
version must do at least as well as what already serves. The checks are the text gate's
(``registry.checks``: presence, precision and recall at the block threshold, calibration,
AUROC against the champion, agreement where no label judges a category, evidence), with the
rule of the file's ``gate`` defaults. :class:`ImageLifecycle` promotes, rolls back and audits
like the text model's :class:`~bastion.registry.lifecycle.Lifecycle`, on the image model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bastion.core.errors import ModelError
from bastion.core.image_heads import ImageHeads
from bastion.core.policy import PolicySet
from bastion.core.settings import Settings
from bastion.registry.aliases import image_model_name
from bastion.registry.checks import Rule, latency_check
from bastion.registry.evaluation import (
    CategoryEvaluation,
    Pair,
    VersionEvaluation,
    binary_metrics,
)
from bastion.registry.gate import pair_checks
from bastion.registry.lifecycle import Lifecycle
from bastion.registry.report import Check, GateReport, measured
from bastion.registry.store import ModelRegistry

__all__ = ["ImageEvalSet", "ImageLifecycle", "SHIPPED", "evaluate_image_version",
           "image_pairs", "run_image_gate"]

#: The champion's name in a report before any image heads were promoted: the shipped model.
SHIPPED = "0 (the shipped image model)"


@dataclass
class ImageEvalSet:
    """Held-out reviewed images: embeddings, the shipped model's outputs, labels."""

    keys: list[tuple[str, str]]  # (tenant, item_id)
    embeddings: np.ndarray  # (n, dim) of the backbone the heads train on
    shipped: dict[str, np.ndarray]  # the shipped model's output per class (sexual, graphic)
    targets: np.ndarray  # (n, len(categories)) soft labels
    mask: np.ndarray  # (n, len(categories)) labelled
    categories: list[str]
    backbone_sha256: str

    def __len__(self) -> int:
        return len(self.keys)


def image_pairs(policy: PolicySet) -> list[Pair]:
    """(tenant, image category) of every tenant that accepts images."""
    return [(t, c) for t, tp in policy.tenants.items() if tp.media.image.enabled
            for c in tp.media.image.categories]


def _served_scores(heads: ImageHeads | None, policy: PolicySet, pair: Pair,
                   data: ImageEvalSet) -> tuple[str | None, np.ndarray | None]:
    """(what scores it, its scores on every held-out image) for one category, as serving
    scores it with ``heads`` (None: the shipped model alone)."""
    t, c = pair
    if heads is not None and c in heads.categories:
        return c, heads.score(data.embeddings)[:, heads.categories.index(c)]
    source = policy.tenants[t].media.image.categories[c].source
    if source is not None and source in data.shipped:
        return f"shipped:{source}", data.shipped[source]
    return None, None


def evaluate_image_version(version: str, heads: ImageHeads | None, data: ImageEvalSet,
                           policy: PolicySet, p99_ms: float | None = None
                           ) -> VersionEvaluation:
    """One image model version (or, with ``heads`` None, the shipped model alone) measured per
    (tenant, image category) on the held-out reviewed images."""
    out: dict[Pair, CategoryEvaluation] = {}
    for pair in image_pairs(policy):
        t, c = pair
        cat = policy.tenants[t].media.image.categories[c]
        key, scores = _served_scores(heads, policy, pair, data)
        if key is None or scores is None:
            out[pair] = CategoryEvaluation(t, c, None, 0, 0, None, None, None, None, None,
                                           note="no head trained for it and no shipped output")
            continue
        if c in data.categories:
            j = data.categories.index(c)
            m = data.mask[:, j]
            y = (data.targets[m, j] >= 0.5).astype(np.float64)
            s = np.asarray(scores, np.float64)[m]
        else:
            y = s = np.zeros(0)
        met = binary_metrics(y, s, {"block": cat.block_threshold})
        block = met.get("block") or {}
        out[pair] = CategoryEvaluation(
            t, c, key, int(met["n"]), int(met["n_pos"]), cat.block_threshold,
            block.get("precision"), block.get("recall"), met.get("auroc"), met.get("ece"),
            note=None if cat.block_threshold is not None else "the policy makes it review-only",
            scores=np.asarray(scores, np.float64))
    return VersionEvaluation(version, out, p99_ms, [] if heads is None else heads.categories)


def run_image_gate(candidate: VersionEvaluation, champion: VersionEvaluation,
                   policy: PolicySet) -> GateReport:
    """The text gate's checks per (tenant, image category), candidate against champion."""
    d = policy.gate
    rule = Rule(min_precision=d.min_precision, recall_tolerance=d.recall_tolerance,
                max_ece=d.max_ece, min_positives=d.min_positives)
    checks: list[Check] = []
    for pair in image_pairs(policy):
        checks += pair_checks(pair, candidate.categories.get(pair),
                              champion.categories.get(pair), candidate.version,
                              champion.version, rule)
    checks.append(latency_check(candidate, d.max_p99_ms))
    failed = any(ch.passed is False for ch in checks)
    return GateReport(candidate=candidate.version, champion=champion.version,
                      passed=measured(checks) and not failed, checks=checks)


class ImageLifecycle(Lifecycle):
    """Gate, promote, roll back and audit the versions of the image model."""

    def __init__(self, settings: Settings, policy: PolicySet,
                 eval_data: ImageEvalSet | None = None,
                 registry: ModelRegistry | None = None) -> None:
        if registry is None:
            registry = ModelRegistry(settings, image_model_name(settings.model_name))
            registry.ensure_reachable()
        super().__init__(settings, policy, registry=registry)
        self._images = eval_data

    @property
    def images(self) -> ImageEvalSet:
        if self._images is None:
            raise ModelError("no held-out reviewed images to gate on: pass eval_data (the "
                             "image snapshot's test split, training.image_retrain)")
        return self._images

    def load(self, version: str) -> ImageHeads:
        return ImageHeads.load(Path(self.registry.download(version)))

    def evaluate_image(self, version: str | None) -> VersionEvaluation:
        """``version`` (None: the shipped model alone) on the held-out reviewed images, with
        the p99 of scoring one image's embedding (the heads' own cost; the backbone's is the
        same for every version)."""
        if version is None:
            return evaluate_image_version(SHIPPED, None, self.images, self.policy)
        heads = self.load(version)
        if heads.backbone["sha256"] != self.images.backbone_sha256:
            raise ModelError(f"version {version} was trained on another image backbone "
                             f"({heads.backbone['sha256'][:12]}) than the held-out images' "
                             f"({self.images.backbone_sha256[:12]})")
        latencies = []
        for row in self.images.embeddings[:100]:
            t0 = time.perf_counter()
            heads.score(row)
            latencies.append((time.perf_counter() - t0) * 1000)
        p99 = float(np.percentile(latencies, 99)) if latencies else None
        return evaluate_image_version(version, heads, self.images, self.policy, p99_ms=p99)

    def gate(self, version: str) -> GateReport:
        version = str(self.registry.get(version).version)
        champion = self._champion()
        try:
            candidate = self.evaluate_image(version)
        except ModelError as err:
            report = GateReport(candidate=version, champion=champion or SHIPPED, passed=False,
                                checks=[Check(None, None, "artifact_loads", False, None, None,
                                              f"version {version} cannot be used: {err}")])
        else:
            baseline = self.evaluate_image(champion if champion != version else None)
            report = run_image_gate(candidate, baseline, self.policy)
        self._store(version, report)
        return report
