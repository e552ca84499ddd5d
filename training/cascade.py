"""Fitting the cascade's first stage for a model version (``core.cascade``).

The first stage is fitted on the same labelled training split as the heads, then calibrated
on the validation split against the full model's scores there and measured on the test split
(the one the gate reads): per head, how many of the items the full model flags the first
stage would allow, the share of items it decides, and the AUROC of the cascade's scores
next to the full model's. ``build_starter`` and retraining call :func:`fit_for_model`;
``bastion starter cascade`` adds a first stage to an artifact that has none
(:func:`add_first_stage`).

The flag level of a head (what "the full model would act on" means in the calibration) is
the lowest score where the model's own held-out curve says a default policy acts: the
review point at ``review_recall`` 0.9 (``core.policy``'s default), the block point at
precision 0.9 and ``core.decision.FALLBACK_REVIEW``, whichever is lowest, but not below
``FLAG_FLOOR``. A tenant that reviews from a lower score gets the full model
(``core.cascade.cascade_fits``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.cascade import (
    DEFAULT_TOLERANCE,
    FirstStage,
    calibrate,
    cascade_scores,
    fit_first_stage,
    measure_agreement,
)
from bastion.core.decision import FALLBACK_REVIEW, threshold_for_precision, threshold_for_recall
from bastion.core.errors import ModelError
from bastion.core.labelled import LabelledSet
from bastion.core.model import ModelMetadata, ModerationModel
from bastion.registry.evaluation import binary_metrics

__all__ = ["REVIEW_RECALL", "add_first_stage", "fit_for_model", "flag_levels"]

REVIEW_RECALL = 0.9  # TenantPolicy's default review_recall: where a default policy reviews
BLOCK_PRECISION = 0.9
# A weak head's recall-0.9 point can sit near zero (violence: 0.08), where nearly every item
# is "flagged" and the first stage could decide nothing; a policy reviewing that low is not
# one the cascade serves (the shipped policies review from 0.6 up): it gets the full model.
FLAG_FLOOR = 0.45


def flag_levels(meta: ModelMetadata, keys: list[str]) -> np.ndarray:
    """Per head, the lowest score a default policy acts on (see the module docstring)."""
    out = []
    for key in keys:
        curve = meta.get("curves", {}).get(key)
        cands = [FALLBACK_REVIEW]
        if curve:
            for t in (threshold_for_recall(curve, REVIEW_RECALL),
                      threshold_for_precision(curve, BLOCK_PRECISION)):
                if t is not None:
                    cands.append(t)
        out.append(max(FLAG_FLOOR, min(cands)))
    return np.asarray(out, np.float32)


def _auroc(data: LabelledSet, keys: list[str], scores: np.ndarray) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for j, key in enumerate(keys):
        if key not in data.categories:
            continue
        c = data.categories.index(key)
        known = data.mask[:, c]
        y = (data.targets[known, c] >= 0.5).astype(np.float64)
        m = binary_metrics(y, scores[known, j].astype(np.float64)) if 0 < y.sum() < len(y) \
            else {}
        out[key] = round(float(m["auroc"]), 5) if "auroc" in m else None
    return out


def fit_for_model(model: ModerationModel, data: LabelledSet, train: np.ndarray,
                  val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                  tolerance: float = DEFAULT_TOLERANCE) -> FirstStage:
    """Fit, calibrate and measure a first stage for ``model`` and attach it.

    Args:
        model: the full model (its heads, and its metadata's held-out curves).
        data: the labelled set the model was built from.
        train: mask of the training split.
        val: (indices, full-model scores) of the calibration items.
        test: (indices, full-model scores) of the held-out items it is measured on.
        tolerance: the share of the full model's flagged items the first stage may allow.
    """
    if not len(val[0]) or not len(test[0]):
        raise ModelError("the first stage needs validation and test items to calibrate and "
                         "measure on; none here")
    keys = model.head_keys
    cols = [data.categories.index(k) for k in keys]
    stage = fit_first_stage([data.texts[i] for i in np.flatnonzero(train)],
                            data.targets[train][:, cols], data.loss_weights[train][:, cols],
                            keys)
    vi, vfull = val
    calibrate(stage, stage.probabilities([data.texts[i] for i in vi]), vfull,
              flag_levels(model.metadata, keys), tolerance)
    ti, tfull = test
    tprobs = stage.probabilities([data.texts[i] for i in ti])
    tdata = data.subset(ti)
    report: dict[str, Any] = measure_agreement(stage, tprobs, tfull)
    full_auroc = _auroc(tdata, keys, tfull)
    casc_auroc = _auroc(tdata, keys, cascade_scores(stage, tprobs, tfull))
    first_auroc = _auroc(tdata, keys, tprobs)
    report["auroc"] = {k: {"full": full_auroc[k], "cascade": casc_auroc[k],
                           "first_stage": first_auroc[k],
                           "delta": None if full_auroc[k] is None or casc_auroc[k] is None
                           else round(casc_auroc[k] - full_auroc[k], 5)}  # type: ignore[operator]
                       for k in full_auroc}
    report["split"] = {"fit": "train", "calibration": f"validation ({len(vi)} items)",
                       "measured": f"test ({len(ti)} items)"}
    report["tolerance_statement"] = (
        f"of the held-out items the full model flags for a head (score >= its flag level), "
        f"the first stage allows at most {tolerance:.1%} on the calibration split")
    stage.report = report
    model.first_stage = stage
    model.metadata["cascade"] = stage.describe()
    return stage


def add_first_stage(path: Path, data: LabelledSet,
                    embed: Callable[[list[str]], np.ndarray], *,
                    splits: tuple[np.ndarray, np.ndarray, np.ndarray],
                    max_test: int | None = None, seed: int = 0,
                    tolerance: float = DEFAULT_TOLERANCE,
                    encoder: Any = None) -> ModerationModel:
    """Load the artifact at ``path``, fit its first stage (full-model scores of the
    validation and test items through ``embed``), return the model with it attached.

    ``max_test`` measures on a random sample of the test split (the full model's encoding
    is what costs)."""
    model = ModerationModel.load(path, encoder=encoder)
    train, val, test = splits
    ti = np.flatnonzero(test)
    if max_test is not None and max_test < len(ti):
        ti = np.sort(np.random.default_rng(seed).choice(ti, max_test, replace=False))
    vi = np.flatnonzero(val)
    vfull = model.heads.score(embed([data.texts[i] for i in vi]))
    tfull = model.heads.score(embed([data.texts[i] for i in ti]))
    fit_for_model(model, data, train, (vi, vfull), (ti, tfull), tolerance)
    return model
