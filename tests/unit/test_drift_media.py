"""Drift and data validation of a tenant's images and clips against its window before
(drift.media): a new camera's resolution is caught, the same traffic again is not."""

from __future__ import annotations

from typing import Any

import numpy as np

from bastion.drift.media import check_media_window


def image_rows(n: int, *, width: int, height: int, shift: float, seed: int,
               fmt: str = "jpeg") -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 16)) + shift
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return [{"item_id": f"i{seed}-{k}", "ts": 1000.0 + k, "decision": "allow",
             "modality": "image", "embedding": emb[k].astype(np.float32),
             "media": {"format": fmt, "width": int(width + rng.integers(-8, 8)),
                       "height": int(height + rng.integers(-8, 8)), "bytes": 50_000}}
            for k in range(n)]


def test_a_new_cameras_resolution_is_drift_and_fails_validation() -> None:
    before = image_rows(150, width=1280, height=720, shift=0.0, seed=1)
    same = image_rows(150, width=1280, height=720, shift=0.0, seed=2)
    calm = check_media_window(before, same, tenant="t", modality="image", n_permutations=200)
    assert not calm.drift and calm.validation["success"], calm.failed
    assert calm.modality == "image" and calm.n_window == 150
    new_phone = image_rows(150, width=4032, height=3024, shift=0.3, seed=3)
    report = check_media_window(before, new_phone, tenant="t", modality="image",
                                n_permutations=200)
    assert report.drift
    assert {"combined", "width_ks", "height_ks", "validation"} <= set(report.failed)
    failing = {f["kwargs"].get("column") for f in report.validation["failures"]}
    assert {"width", "height"} <= failing


def test_an_unaccepted_format_fails_the_structural_expectation() -> None:
    before = image_rows(120, width=640, height=480, shift=0.0, seed=4)
    gifs = image_rows(120, width=640, height=480, shift=0.0, seed=5, fmt="gif")
    report = check_media_window(before, gifs, tenant="t", modality="image", n_permutations=200)
    assert not report.validation["success"]
    assert any(f["kwargs"].get("column") == "format" for f in report.validation["failures"])


def test_clips_are_checked_on_duration_sample_rate_and_transcript_embedding() -> None:

    def clips(n: int, seconds: float, rate: int, seed: int) -> list[dict[str, Any]]:
        r = np.random.default_rng(seed)
        return [{"item_id": f"a{seed}-{k}", "ts": 1.0 + k, "decision": "allow",
                 "modality": "audio", "embedding": r.normal(size=8).astype(np.float32),
                 "media": {"format": "wav", "duration_s": float(seconds + r.uniform(-1, 1)),
                           "sample_rate": rate, "channels": 1,
                           "speech_spans": [[0.0, seconds / 2]]}} for k in range(n)]

    before = clips(120, 6.0, 16_000, 7)
    assert not check_media_window(before, clips(120, 6.0, 16_000, 8), tenant="t",
                                  modality="audio", n_permutations=200).drift
    narrowband = check_media_window(before, clips(120, 20.0, 8_000, 9), tenant="t",
                                    modality="audio", n_permutations=200)
    assert narrowband.drift and "duration_s_ks" in narrowband.failed
    failing = {f["kwargs"].get("column") for f in narrowband.validation["failures"]}
    assert {"sample_rate", "duration_s"} <= failing
