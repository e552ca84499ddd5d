"""Media benchmark (issue 16), all measured in one run on this machine:

1. the media models alone, in this process, one thread each (the deployments' default,
   ``serving.media_threads``): the image-safety model batched, OCR, PDQ; voice activity,
   Whisper tiny.en and the acoustic cues as a real-time factor (compute seconds per second of
   audio), and the word error rate of the transcripts on our own synthesized set
   (``tests.media_samples.ASR_SET``: 12 sentences, 6 espeak-ng voices, 150-180 words/min);
2. end to end through the API (proxy -> Ingress -> ImageModerator / VoiceModerator -> Scorer):
   images/s and latency for one-image requests, and the audio real-time factor for one-clip
   requests (wall seconds per second of audio sent);
3. what a text-only tenant pays for the media deployments: the same text traffic with them
   deployed and with ``image_replicas: 0, audio_replicas: 0``, alternated twice, and the
   memory of the media replicas' processes.

No labelled abusive images or clips exist here: the images are captions rendered with Pillow
and skimage's photos, the speech is espeak-ng's. Needs espeak-ng and tesseract-ocr.
Run: ``.venv/bin/python bench/media.py`` (about 6 minutes; nothing else should run).
Writes bench/results/media.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bastion.core.runtime import ray_env  # noqa: E402

for _k, _v in ray_env().items():
    os.environ.setdefault(_k, _v)

from bastion.core.media import (  # noqa: E402
    AUDIO_RATE,
    acoustic_cues,
    decode_audio,
    decode_image,
    pdq_hash,
)
from bastion.core.settings import ServingConfig, load_settings  # noqa: E402
from bench._traffic import _run, load, machine, real_texts, write_results  # noqa: E402
from bench.serving import deploy  # noqa: E402
from tests.media_samples import ASR_SET, PHOTOS, asr_voice, photo, speech, text_image, wer  # noqa: E402

CAPTIONS = [
    "I will find you and hurt you", "happy birthday grandma", "you are worthless trash",
    "see you at the beach on sunday", "send me your password now", "gg well played team",
    "I know where you live", "lunch is ready, come downstairs", "nobody would miss you",
    "great photo of the mountains", "buy cheap followers here", "our cat learned a new trick",
]


def images() -> list[tuple[str, bytes]]:
    out = [(f"caption:{c}", text_image(c, fmt=("PNG", "JPEG", "WEBP")[i % 3]))
           for i, c in enumerate(CAPTIONS)]
    out += [(f"photo:{p}@{s}", photo(p, "JPEG", scale=s)) for p in PHOTOS for s in (1.0, 0.5)]
    return out


def clips() -> list[tuple[str, bytes, float]]:
    out = []
    for i, (text, spec) in enumerate(ASR_SET):
        voice, wpm = asr_voice(spec)
        data = speech(text, voice=voice, wpm=wpm, noise_db=25 if i % 2 else None, pad_s=0.3,
                      seed=i)
        out.append((text, data, decode_audio(data, max_bytes=1 << 30, max_seconds=600).duration_s))
    return out


def in_process(imgs: list[tuple[str, bytes]], auds: list[tuple[str, bytes, float]]
               ) -> dict[str, Any]:
    from bastion.core.media_models import ImageSafety, Transcriber, VoiceActivity, ocr

    decoded = [decode_image(d, max_bytes=1 << 30, max_pixels=1 << 28) for _, d in imgs]
    model = ImageSafety(threads=1)
    model([decoded[0].rgb])  # warm up
    t0 = time.perf_counter()
    for i in range(0, len(decoded), 8):
        model([d.rgb for d in decoded[i:i + 8]])
    safety_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for d in decoded:
        pdq_hash(d.rgb)
    pdq_s = time.perf_counter() - t0
    ocr_ms = []
    for d in decoded:
        t0 = time.perf_counter()
        ocr(d.rgb)
        ocr_ms.append((time.perf_counter() - t0) * 1000)
    vad, asr = VoiceActivity(threads=1), Transcriber(threads=1)
    per_clip, total_audio, vad_s, asr_s, cue_s = [], 0.0, 0.0, 0.0, 0.0
    for ref, data, dur in auds:
        a = decode_audio(data, max_bytes=1 << 30, max_seconds=600)
        t0 = time.perf_counter()
        spans = vad.speech_spans(a.samples)
        t1 = time.perf_counter()
        tr = asr.transcribe(a.samples, spans)
        t2 = time.perf_counter()
        acoustic_cues(a.samples, AUDIO_RATE, speech_s=sum(e - s for s, e in spans),
                      n_words=len(tr.words))
        t3 = time.perf_counter()
        vad_s, asr_s, cue_s = vad_s + t1 - t0, asr_s + t2 - t1, cue_s + t3 - t2
        total_audio += dur
        per_clip.append({"reference": ref, "hypothesis": tr.text,
                         "wer": round(wer(ref, tr.text), 3), "seconds": round(dur, 2)})
    return {
        "image_safety": {"model": model.name, "batch": 8, "threads": 1,
                         "images_per_s": round(len(decoded) / safety_s, 1)},
        "pdq_ms_per_image": round(pdq_s / len(decoded) * 1000, 2),
        "ocr_ms_per_image": {"median": round(statistics.median(ocr_ms), 1),
                             "max": round(max(ocr_ms), 1)},
        "audio_seconds": round(total_audio, 1),
        "real_time_factor": {"vad": round(vad_s / total_audio, 4),
                             "asr": round(asr_s / total_audio, 4),
                             "cues": round(cue_s / total_audio, 4),
                             "all": round((vad_s + asr_s + cue_s) / total_audio, 4)},
        "asr": {"model": asr.status()["name"], "compute_type": asr.status()["compute_type"],
                "beam_size": asr.status()["beam_size"],
                "wer_mean": round(float(np.mean([c["wer"] for c in per_clip])), 3),
                "clips": per_clip},
    }


def end_to_end(url: str, key: str, imgs: list[tuple[str, bytes]],
               auds: list[tuple[str, bytes, float]], rounds: int) -> dict[str, Any]:
    img_bodies = [({"tenant": "demo", "items": [{"id": f"i{k}", "image_base64":
                                                 base64.b64encode(d).decode()}]}, key)
                  for k, (_, d) in enumerate(imgs * rounds)]
    asyncio.run(_run(url, img_bodies[:4], 2))  # warm up
    lat, failures, wall = asyncio.run(_run(url, img_bodies, 4))
    if failures:
        raise RuntimeError(f"{failures} image requests failed")
    ms = np.array(lat) * 1000
    out: dict[str, Any] = {"images": {
        "requests": len(img_bodies), "concurrency": 4, "images_per_s": round(len(lat) / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1)}}
    aud_bodies = [({"tenant": "demo", "items": [{"id": f"a{k}", "audio_base64":
                                                 base64.b64encode(d).decode()}]}, key)
                  for k, (_, d, _) in enumerate(auds * rounds)]
    audio_s = sum(dur for _, _, dur in auds) * rounds
    asyncio.run(_run(url, aud_bodies[:2], 2))
    lat, failures, wall = asyncio.run(_run(url, aud_bodies, 2))
    if failures:
        raise RuntimeError(f"{failures} audio requests failed")
    ms = np.array(lat) * 1000
    out["audio"] = {"requests": len(aud_bodies), "concurrency": 2,
                    "audio_seconds": round(audio_s, 1),
                    "real_time_factor": round(wall / audio_s, 4),
                    "p50_ms": round(float(np.percentile(ms, 50)), 1),
                    "p99_ms": round(float(np.percentile(ms, 99)), 1)}
    return out


def media_rss_mb() -> dict[str, float]:
    import psutil

    out: dict[str, float] = {}
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        for name in ("ImageModerator", "VoiceModerator"):
            if f"ServeReplica:bastion:{name}" in cmd:
                out[name] = round(p.memory_info().rss / 2**20, 1)
    return out


def text_cost(settings: Any, dashboard: str, url: str, texts: list[str], policy: dict[str, Any],
              scale: float) -> dict[str, Any]:
    """Text-only traffic with the media deployments on and off, alternated (on, off, on,
    off), so that drift in the machine's speed falls on both alike. A first round with them
    on is run and kept apart ("settle"): right after the media traffic of part 2 the first
    text round here ran at 40 % of the later ones, an after-effect of that traffic, not of
    the deployments being there."""
    runs: dict[str, list[dict[str, Any]]] = {"settle": [], "with_media": [],
                                             "without_media": []}
    memory: dict[str, float] = {}
    for mode in ("settle", *("with_media", "without_media") * 2):
        n = 0 if mode == "without_media" else 1
        sv = ServingConfig(image_replicas=n, audio_replicas=n)
        keys = deploy(settings.model_copy(update={"serving": sv}), dashboard, policy, None)
        if n:
            memory = media_rss_mb()
        ten = [("demo", keys["demo"])]
        load(url, texts, ten, 32, 8, 16)  # warm up
        runs[mode].append({"single_c8": load(url, texts, ten, 1, 8, int(600 * scale)),
                           "batch32_c8": load(url, texts, ten, 32, 8, int(60 * scale))})
        print(f"  {mode}: single {runs[mode][-1]['single_c8']['items_per_s']} items/s, "
              f"32-item {runs[mode][-1]['batch32_c8']['items_per_s']} items/s", flush=True)

    def mean(mode: str, kind: str, key: str) -> float:
        return round(float(np.mean([r[kind][key] for r in runs[mode]])), 1)

    summary = {kind: {m: {k: mean(m, kind, k) for k in ("items_per_s", "p50_ms", "p99_ms")}
                      for m in ("with_media", "without_media")}
               for kind in ("single_c8", "batch32_c8")}
    for kind in summary:
        w, wo = summary[kind]["with_media"]["items_per_s"], \
            summary[kind]["without_media"]["items_per_s"]
        summary[kind]["throughput_ratio_with_over_without"] = round(w / wo, 3)
    return {"runs": runs, "summary": summary, "media_replica_rss_mb": memory}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="Multiply request counts.")
    ap.add_argument("--out", default=str(ROOT / "bench/results/media.json"))
    args = ap.parse_args()
    import yaml

    from bastion.core.runtime import start_ray, stop_ray
    from bastion.training.starter import register_starter

    texts, source = real_texts(2000)
    imgs, auds = images(), clips()
    results: dict[str, Any] = {
        "benchmark": "media", "machine": machine(),
        "media": {"images": len(imgs), "image_sources": "12 Pillow captions (PNG, JPEG, WebP), "
                  f"{len(PHOTOS)} skimage photos at full and half size (JPEG)",
                  "clips": len(auds), "clip_sources": "espeak-ng, tests.media_samples.ASR_SET, "
                  "every other clip with noise at 25 dB SNR"},
        "texts": {"n": len(texts), "source": source},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print("1. the media models in process", flush=True)
    results["in_process"] = in_process(imgs, auds)
    print(f"  {results['in_process']['image_safety']['images_per_s']} images/s (model), "
          f"RTF {results['in_process']['real_time_factor']['all']}, "
          f"WER {results['in_process']['asr']['wer_mean']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as state:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        settings = load_settings(state, port=port)
        register_starter(settings)
        dashboard = start_ray(settings)
        url = f"http://127.0.0.1:{port}/v1/moderate"
        policy = yaml.safe_load((ROOT / "core/default_policy.yaml").read_text())
        try:
            print("2. end to end through the API", flush=True)
            keys = deploy(settings, dashboard, policy, None)
            results["end_to_end"] = end_to_end(url, keys["demo"], imgs, auds,
                                               max(1, round(2 * args.scale)))
            e2e = results["end_to_end"]
            print(f"  {e2e['images']['images_per_s']} images/s, audio RTF "
                  f"{e2e['audio']['real_time_factor']}", flush=True)
            print("3. a text-only tenant with and without the media deployments", flush=True)
            results["text_only_cost"] = text_cost(settings, dashboard, url, texts, policy,
                                                  args.scale)
        finally:
            stop_ray()
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_results(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
