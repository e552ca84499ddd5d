"""Drift and data validation of a tenant's images and voice clips.

No model version was trained on a tenant's media (the image model ships trained; the text
heads read transcripts and the text images show), so the reference is the tenant's own media
traffic of the window before: a new phone camera's resolution, a new codec or a new kind of
picture shows as this window differing from the last.

Per modality, the window is validated with a great-expectations suite derived from the
reference (image format, width and height; audio duration, sample rate and channels) and
tested for drift: MMD on the embeddings (the image model's for images, the text encoder's of
the transcript for audio; weight one half) and KS on the sizes (image width and height, audio
duration and voiced share; the other half, evenly), combined by the Cauchy combination as in
``drift.monitor``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from bastion.drift.combine import cauchy_combination
from bastion.drift.mmd import MMDDetector
from bastion.drift.monitor import DriftReport, window_report
from bastion.drift.result import DriftResult
from bastion.drift.univariate import ks_test
from bastion.drift.validation import gx_module, quantile_range, validate

__all__ = ["MEDIA_MODALITIES", "media_frame", "build_media_suite", "check_media_window"]

MEDIA_MODALITIES = ("image", "audio")
IMAGE_FORMATS = ("png", "jpeg", "webp")
AUDIO_FORMATS = ("wav", "flac", "ogg")
# the sizes KS tests per modality
_SIZES = {"image": ("width", "height"), "audio": ("duration_s", "speech_share")}


def media_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per image or clip: its id, decision and media facts (the event log's
    ``media``), the columns a media suite checks."""
    out = []
    for r in rows:
        m = r.get("media") or {}
        speech = sum(float(e) - float(s) for s, e in m.get("speech_spans") or []) \
            if "speech_spans" in m else (m.get("cues") or {}).get("speech_s")
        dur = m.get("duration_s")
        out.append({
            "item_id": r.get("item_id"), "decision": r.get("decision"),
            "format": m.get("format"), "width": m.get("width"), "height": m.get("height"),
            "bytes": m.get("bytes"), "duration_s": dur, "sample_rate": m.get("sample_rate"),
            "channels": m.get("channels"),
            "speech_share": (float(speech) / float(dur)) if speech is not None and dur else None,
        })
    frame = pd.DataFrame(out)
    for col in ("width", "height", "bytes", "duration_s", "sample_rate", "channels",
                "speech_share"):
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame


def build_media_suite(reference: pd.DataFrame, modality: str, *, name: str,
                      quantile: float = 0.001, slack: float = 0.25,
                      mostly: float = 0.99) -> dict[str, Any]:
    """The expectations a window of ``modality`` items must meet, as GX's JSON dict.

    Structural ones hold exactly (an accepted format, sizes present and positive, at most two
    audio channels); learned ones are the reference's ``quantile`` range of each size widened
    by ``slack``, for a ``mostly`` share of rows, and its sample rates."""
    if modality not in MEDIA_MODALITIES:
        raise ValueError(f"build_media_suite: modality must be one of {MEDIA_MODALITIES}")
    gx = gx_module()
    E = gx.expectations
    exps: list[Any] = [E.ExpectTableRowCountToBeBetween(min_value=1),
                       E.ExpectColumnValuesToNotBeNull(column="format")]
    if modality == "image":
        exps.append(E.ExpectColumnValuesToBeInSet(column="format", value_set=list(IMAGE_FORMATS)))
        sizes = ["width", "height"]
    else:
        exps.append(E.ExpectColumnValuesToBeInSet(column="format", value_set=list(AUDIO_FORMATS)))
        exps.append(E.ExpectColumnValuesToBeBetween(column="channels", min_value=1, max_value=2))
        rates = sorted({int(x) for x in reference.get("sample_rate", pd.Series()).dropna()})
        if rates:
            exps.append(E.ExpectColumnValuesToBeInSet(column="sample_rate", value_set=rates,
                                                      mostly=mostly))
        sizes = ["duration_s"]
    for col in sizes:
        exps.append(E.ExpectColumnValuesToNotBeNull(column=col))
        exps.append(E.ExpectColumnValuesToBeBetween(column=col, min_value=0, strict_min=True))
        if (q := quantile_range(reference, col, quantile)) is not None:
            exps.append(E.ExpectColumnValuesToBeBetween(
                column=col, min_value=math.floor(q[0] * (1 - slack)),
                max_value=math.ceil(q[1] * (1 + slack)), mostly=mostly))
    meta = {"bastion": {"modality": modality, "quantile": quantile, "slack": slack,
                        "mostly": mostly, "n_reference": int(len(reference))}}
    suite = gx.ExpectationSuite(name=name, expectations=exps, meta=meta)
    return dict(suite.to_json_dict())


def _embeddings(rows: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
    embs = [np.asarray(r["embedding"], dtype=np.float32) for r in rows
            if r.get("embedding") is not None]
    if len(embs) < 2 or len({e.shape for e in embs}) != 1:
        return None
    return np.stack(embs)


def check_media_window(reference: Sequence[Mapping[str, Any]],
                       rows: Sequence[Mapping[str, Any]], *, tenant: str, modality: str,
                       false_alarm_rate: float = 0.01, n_permutations: int | None = None,
                       seed: int = 0) -> DriftReport:
    """Validate and test one window of a tenant's ``modality`` items (event-log rows) against
    the window before it (``reference``)."""
    ref_frame, win_frame = media_frame(reference), media_frame(rows)
    suite = build_media_suite(ref_frame, modality, name=f"{tenant}-{modality}-previous-window")
    val = validate(win_frame, suite)
    sizes = _SIZES[modality]
    share = false_alarm_rate / 2 / len(sizes)
    mmd_p = false_alarm_rate / 2
    results: list[DriftResult] = []
    ref_emb, win_emb = _embeddings(reference), _embeddings(rows)
    if ref_emb is not None and win_emb is not None and ref_emb.shape[1] == win_emb.shape[1]:
        perms = n_permutations or int(np.ceil(2 / mmd_p))
        results.append(MMDDetector(ref_emb, p_threshold=mmd_p, n_permutations=perms,
                                   seed=seed).test(win_emb))
    for col in sizes:
        a = ref_frame[col].dropna().to_numpy(np.float64) if col in ref_frame else np.array([])
        b = win_frame[col].dropna().to_numpy(np.float64) if col in win_frame else np.array([])
        if len(a) and len(b):
            results.append(ks_test(a, b, p_threshold=share, name=f"{col}_ks"))
    usable = [r for r in results if r.p_value is not None]
    weights = np.array([0.5 if r.name == MMDDetector.name else 0.5 / len(sizes) for r in usable])
    combined_p = (cauchy_combination(np.array([r.p_value for r in usable]), weights)
                  if usable else 1.0)
    drift = combined_p <= false_alarm_rate
    combined = DriftResult("combined", combined_p, combined_p, false_alarm_rate, drift,
                           {"method": "Cauchy combination (Liu & Xie 2020)",
                            "reference": "the tenant's previous window", "n_reference":
                            len(reference)})
    return window_report(
        tenant, rows, val, [asdict(r) | {"counts": True} for r in [combined, *results]], drift,
        [r.name for r in results if r.drift], false_alarm_rate=false_alarm_rate,
        model_version=None, modality=modality)
