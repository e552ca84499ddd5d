"""The media deployments: images and voice clips, each on its own Ray Serve deployment beside
the Scorer, so that a text-only tenant's requests never reach them (and ``image_replicas`` /
``audio_replicas`` of 0 leave them out altogether).

``ImageModerator`` decodes a batch of images, scores them with the shipped image-safety model
(``core.media_models.ImageSafety``: sexual and graphic content, and the pooled embedding the
event log and drift keep) and with the image model's ``@champion`` heads on that embedding
(``core.image_heads``: trained on reviewed images, gated, followed like the Scorer follows the
text model), computes their PDQ hashes and reads the text they show with
tesseract-ocr. ``VoiceModerator`` decodes a clip, finds its speech (silero VAD), transcribes
it with word times (Whisper tiny.en on CTranslate2) and measures its acoustic cues (loudness,
bursts, speech rate). Neither decides anything: the Ingress scores the text they read with the
text path and applies the tenant's policy (``serving.decisions``).

Each call answers per item, an ``error`` in place of the facts for media that cannot be
decoded, so a bad item becomes the caller's 422 and the replica keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve

from bastion.core.image_backbones import create_served_backbone
from bastion.core.image_heads import ImageHeads, backbone_identity
from bastion.core.media import (
    DecodedImage,
    MediaError,
    acoustic_cues,
    decode_audio,
    decode_image,
    pdq_hash,
)
from bastion.core.media_models import Transcriber, VoiceActivity, ocr, ocr_available
from bastion.core.settings import Limits

__all__ = ["ImageModerator", "VoiceModerator", "MIME"]

log = logging.getLogger("ray.serve")

MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp",
        "wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg"}


def _read_text(img: DecodedImage) -> tuple[str, str | None]:
    """The text ``img`` shows, and None; or "" and why OCR failed (scored without its text)."""
    try:
        return ocr(img.rgb), None
    except Exception as err:  # noqa: BLE001 - the image is still scored, without its text
        return "", f"OCR failed: {err}"


@serve.deployment(name="ImageModerator", ray_actor_options={"num_cpus": 0.25})
class ImageModerator:
    """Images: decode, image-safety scores and embedding, PDQ hash, OCR text."""

    def __init__(self, limits: dict[str, Any], threads: int = 1,
                 backbone: str = "image-safety",
                 backbone_options: dict[str, Any] | None = None,
                 state_dir: str | None = None, tracking_uri: str | None = None,
                 model_name: str | None = None, champion_poll_s: float = 2.0) -> None:
        """``state_dir``, ``tracking_uri`` and ``model_name`` name the registry whose image
        model's ``@champion`` (trained image heads) this replica follows; without them it
        serves the backbone's own categories only."""
        self.limits = Limits.model_validate(limits)
        # a registered backbone (core.image_backbones); an unknown name fails the deployment
        # with the known ones listed
        self.model = create_served_backbone(backbone, backbone_options, threads=threads,
                                            tracking_uri=tracking_uri)
        self.identity = backbone_identity(self.model.status())
        self.heads: tuple[str, ImageHeads] | None = None  # (version, heads), swapped whole
        self.heads_note: str | None = "no image heads registered" if state_dir else \
            "not following a registry"
        self.swaps: list[dict[str, Any]] = []
        self._stop = threading.Event()
        if state_dir is not None:
            self._registry_args = (state_dir, tracking_uri, model_name)
            self._follow_once()  # the current champion before the first request
            threading.Thread(target=self._follow, args=(champion_poll_s,), daemon=True,
                             name="image-champion-watch").start()
        self.ocr_missing = ocr_available()  # None when tesseract runs, else why not
        if self.ocr_missing:
            log.warning("ImageModerator: %s", self.ocr_missing)
        self.images = 0
        self.batches = 0
        self.busy_s = 0.0
        self._ocr = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1),
                                       thread_name_prefix="ocr")

    # -- the image model's @champion: trained heads, followed like the Scorer follows text's
    def _follow(self, poll_s: float) -> None:
        while not self._stop.wait(poll_s):
            self._follow_once()

    def _follow_once(self) -> None:
        # MLflow loads here, in the replica that follows a registry, not at import
        from bastion.core.errors import RegistryEmptyError
        from bastion.core.settings import load_settings
        from bastion.registry.aliases import CHAMPION, image_model_name
        from bastion.registry.store import ModelRegistry

        state_dir, tracking_uri, model_name = self._registry_args
        try:
            if not hasattr(self, "_registry"):
                settings = load_settings(state_dir, mlflow_tracking_uri=tracking_uri,
                                         **({"model_name": model_name} if model_name else {}))
                self._registry = ModelRegistry(settings,
                                               image_model_name(settings.model_name))
            version = self._registry.by_alias(CHAMPION).version
        except RegistryEmptyError:
            if self.heads is not None:  # the alias was removed: back to the backbone's own
                self.swaps.append({"at": time.time(), "from": self.heads[0], "to": None})
            self.heads, self.heads_note = None, "no image heads are @champion"
            return
        except Exception as err:  # noqa: BLE001 - registry unreachable: keep serving, retry
            log.warning("ImageModerator: cannot read the image model's @champion: %s", err)
            return
        if self.heads is not None and self.heads[0] == version:
            return
        try:
            heads = ImageHeads.load(self._registry.download(version))
        except Exception as err:  # noqa: BLE001 - a bad version keeps the old one serving
            self.heads_note = f"image heads v{version} failed to load: {err}"
            log.error("ImageModerator: %s", self.heads_note)
            return
        if not heads.fits(self.identity):
            self.heads_note = (f"image heads v{version} were trained on backbone "
                               f"{heads.backbone['name']} ({heads.backbone['sha256'][:12]}), "
                               f"not the one served ({self.identity['sha256'][:12]}): the "
                               "backbone's own categories serve")
            log.warning("ImageModerator: %s", self.heads_note)
            return
        old = self.heads[0] if self.heads else None
        self.heads, self.heads_note = (version, heads), None
        self.swaps.append({"at": time.time(), "from": old, "to": version})
        log.info("ImageModerator serves image heads v%s (was %s)", version, old)

    def __del__(self) -> None:
        self._stop.set()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def analyze(self, calls: list[tuple[bytes, bool]]) -> list[dict[str, Any]]:
        """One batch of ``(image bytes, read its text)`` calls: the facts of each image, or
        ``{"error": ...}``."""
        return await asyncio.to_thread(self._analyze, calls)

    def _analyze(self, calls: list[tuple[bytes, bool]]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        out: list[dict[str, Any]] = [{} for _ in calls]
        decoded = []
        for i, (data, _) in enumerate(calls):
            try:
                decoded.append((i, decode_image(data, max_bytes=self.limits.max_image_bytes,
                                                max_pixels=self.limits.max_image_pixels)))
            except MediaError as err:
                out[i] = {"error": str(err)}
        if decoded:
            # tesseract runs as a process of its own, one thread each: a batch's images are
            # read in parallel, beside the image model
            wanted = [img for i, img in decoded if calls[i][1]] if not self.ocr_missing else []
            texts = self._ocr.map(_read_text, wanted)
            probs, emb = self.model([img.rgb for _, img in decoded])
            served = self.heads  # one version for the whole batch
            head_probs = None if served is None else served[1].score(emb)
            read = iter(texts)
            for k, (i, img) in enumerate(decoded):
                pdq, quality = pdq_hash(img.rgb)
                facts: dict[str, Any] = {
                    "format": img.format, "mime": MIME[img.format], "width": img.width,
                    "height": img.height, "bytes": img.n_bytes, "sha256": img.sha256,
                    "pdq": pdq, "pdq_quality": quality,
                    "image_scores": {c: round(float(p), 6)
                                     for c, p in zip(self.model.classes, probs[k], strict=True)},
                    "embedding": emb[k].astype(np.float16),
                    "backbone_sha256": self.identity["sha256"],
                }
                if served is not None and head_probs is not None:
                    facts["image_version"] = served[0]
                    facts["head_scores"] = {
                        c: round(float(p), 6)
                        for c, p in zip(served[1].categories, head_probs[k], strict=True)}
                if calls[i][1]:
                    if self.ocr_missing:
                        facts["ocr_error"] = self.ocr_missing
                    else:
                        text, error = next(read)
                        facts["ocr_text" if error is None else "ocr_error"] = \
                            text if error is None else error
                out[i] = facts
        self.images += len(decoded)
        self.batches += 1
        self.busy_s += time.perf_counter() - t0
        return out

    def status(self) -> dict[str, Any]:
        heads = None if self.heads is None else {
            "version": self.heads[0], "categories": self.heads[1].categories}
        return {"model": self.model.status(), "heads": heads, "heads_note": self.heads_note,
                "swaps": self.swaps[-5:], "ocr": self.ocr_missing or "tesseract-ocr",
                "images": self.images, "batches": self.batches,
                "busy_s": round(self.busy_s, 3)}


@serve.deployment(name="VoiceModerator", ray_actor_options={"num_cpus": 0.25})
class VoiceModerator:
    """Voice clips: decode, voice activity, transcript with word times, acoustic cues."""

    def __init__(self, limits: dict[str, Any], threads: int = 1) -> None:
        self.limits = Limits.model_validate(limits)
        self.vad = VoiceActivity(threads=threads)
        self.asr = Transcriber(threads=threads)
        self.clips = 0
        self.audio_s = 0.0
        self.busy_s = 0.0

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.005)
    async def analyze(self, clips: list[bytes]) -> list[dict[str, Any]]:
        """One batch of clips: the facts of each, or ``{"error": ...}``."""
        return await asyncio.to_thread(lambda: [self._clip(c) for c in clips])

    def _clip(self, data: bytes) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            audio = decode_audio(data, max_bytes=self.limits.max_audio_bytes,
                                 max_seconds=self.limits.max_audio_seconds)
        except MediaError as err:
            return {"error": str(err)}
        spans = self.vad.speech_spans(audio.samples)
        transcript = self.asr.transcribe(audio.samples, spans)
        speech_s = float(sum(e - s for s, e in spans))
        cues = acoustic_cues(audio.samples, 16_000, speech_s=speech_s,
                             n_words=len(transcript.words))
        self.clips += 1
        self.audio_s += audio.duration_s
        self.busy_s += time.perf_counter() - t0
        return {
            "format": audio.format, "mime": MIME[audio.format],
            "duration_s": round(audio.duration_s, 3), "sample_rate": audio.sample_rate,
            "channels": audio.channels, "bytes": audio.n_bytes, "sha256": audio.sha256,
            "speech_spans": [[round(s, 2), round(e, 2)] for s, e in spans],
            "transcript": transcript.text,
            "words": [[round(w.start, 2), round(w.end, 2), w.text] for w in transcript.words],
            "segments": [[round(g.start, 2), round(g.end, 2), g.text]
                         for g in transcript.segments],
            "cues": cues.as_dict(),
        }

    def status(self) -> dict[str, Any]:
        return {"vad": self.vad.status(), "asr": self.asr.status(), "clips": self.clips,
                "audio_s": round(self.audio_s, 2), "busy_s": round(self.busy_s, 3),
                "real_time_factor": round(self.busy_s / self.audio_s, 3) if self.audio_s else None}
