"""Test media made at test time, so no image or audio file is committed: captions rendered with
Pillow, photos from ``skimage.data``, speech synthesised with espeak-ng, and a small spoken set
with its word error rate for the transcriber.

The tools each sample needs are checked by ``espeak_available()`` / ``tesseract_available()``;
``MISSING_TOOLS`` holds the message (with the install command) a test passes to
``tests._requires.missing`` when one is absent.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "ASR_SET", "MISSING_TOOLS", "espeak_available", "tesseract_available", "text_image",
    "photo", "photo_variant", "caption_variant", "speech", "speech_samples", "encode_audio",
    "wer", "asr_voice", "PHOTOS",
]

MISSING_TOOLS: dict[str, tuple[str, str]] = {
    "espeak-ng": ("espeak-ng (speech synthesis for the audio tests)",
                  "apt-get install -y espeak-ng"),
    "tesseract": ("tesseract-ocr (reads the text an image shows)",
                  "apt-get install -y tesseract-ocr"),
}

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry")

_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"),
              Path("/usr/share/fonts/truetype/liberation"))
_FONT_NAMES = ("DejaVuSans.ttf", "LiberationSans-Regular.ttf")


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def tesseract_available() -> bool:
    return shutil.which("tesseract") is not None


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for folder in _FONT_DIRS:
        for name in _FONT_NAMES:
            if (folder / name).is_file():
                return ImageFont.truetype(str(folder / name), size)
    return ImageFont.load_default(size=size)


def _encode_image(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    fmt = fmt.upper()
    if fmt in ("JPEG", "JPG"):
        img.convert("RGB").save(buf, format="JPEG", quality=quality)
    elif fmt == "WEBP":
        img.save(buf, format="WEBP", quality=quality)
    else:
        img.save(buf, format=fmt)
    return buf.getvalue()


def text_image(text: str, *, size: tuple[int, int] = (640, 360), fmt: str = "PNG",
               bg: str = "white", fg: str = "black", font_size: int = 36,
               noise: float = 0.0, seed: int = 0) -> bytes:
    """A caption: ``text`` wrapped to the width, centred, optionally with Gaussian pixel noise
    of standard deviation ``noise`` (0..255 scale); encoded as ``fmt`` (PNG, JPEG, WEBP, GIF)."""
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    font = _font(font_size)
    # Wrap on the measured width of an average character, then shrink the wrap until it fits.
    avg = max(1.0, draw.textlength("abcdefghijklmnopqrstuvwxyz", font=font) / 26)
    width_chars = max(4, int(size[0] * 0.9 / avg))
    while True:
        lines = textwrap.wrap(text, width=width_chars) or [""]
        widest = max(draw.textlength(line, font=font) for line in lines)
        if widest <= size[0] * 0.95 or width_chars <= 4:
            break
        width_chars -= 1
    line_h = int(font_size * 1.3)
    y = max(0, (size[1] - line_h * len(lines)) // 2)
    for line in lines:
        w = draw.textlength(line, font=font)
        draw.text(((size[0] - w) / 2, y), line, fill=fg, font=font)
        y += line_h
    if noise > 0:
        rng = np.random.default_rng(seed)
        arr = np.asarray(img, dtype=np.float32) + rng.normal(0.0, noise, (size[1], size[0], 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return _encode_image(img, fmt)


def photo(name: str = "astronaut", fmt: str = "JPEG", scale: float = 1.0,
          quality: int = 90) -> bytes:
    """A benign photo from ``skimage.data`` (``PHOTOS``), RGB, resized by ``scale``, encoded."""
    from skimage import data

    arr = np.asarray(getattr(data, name)())
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    img = Image.fromarray(arr[..., :3].astype(np.uint8))
    if scale != 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.LANCZOS)
    return _encode_image(img, fmt, quality=quality)


def photo_variant(seed: int, fmt: str = "JPEG") -> bytes:
    """A distinct benign photo: a random crop (40-90% of each side), maybe mirrored, of one of
    skimage's photos (not "chelsea", a known-bad image of the test policy) or scikit-learn's
    two sample images, resized to 256-640 pixels wide."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    rng = np.random.default_rng(seed)
    sources = [n for n in PHOTOS if n != "chelsea"] + ["china.jpg", "flower.jpg"]
    name = sources[seed % len(sources)]
    arr = np.asarray(load_sample_image(name) if name.endswith(".jpg") else getattr(data, name)())
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    h, w = arr.shape[:2]
    ch, cw = int(h * rng.uniform(0.4, 0.9)), int(w * rng.uniform(0.4, 0.9))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    img = Image.fromarray(arr[y:y + ch, x:x + cw, :3].astype(np.uint8))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    width = int(rng.integers(256, 641))
    img = img.resize((width, max(1, round(img.height * width / img.width))),
                     Image.Resampling.LANCZOS)
    return _encode_image(img, fmt, quality=int(rng.integers(70, 95)))


_WHO = ("alex", "sam", "jo", "kim", "ria", "ben", "noor", "li")
_SAID = ("are you coming tonight", "send me the file", "lol no way", "where are you now",
         "call me back", "that meeting ran long", "see you at 8", "did you eat yet",
         "check the group chat", "who posted that")


def caption_variant(seed: int, fmt: str = "PNG") -> bytes:
    """A distinct screenshot of a chat: two or three lines of who said what, in random
    colours, size and font size (``text_image``)."""
    rng = np.random.default_rng(seed)
    lines = [f"{_WHO[int(rng.integers(len(_WHO)))]}: {_SAID[int(rng.integers(len(_SAID)))]}"
             for _ in range(int(rng.integers(2, 4)))]
    dark = rng.random() < 0.5
    return text_image("   ".join(lines),
                      size=(int(rng.integers(360, 721)), int(rng.integers(200, 481))),
                      fmt=fmt, bg="#1e1e1e" if dark else "#f4f4f4",
                      fg="#e0e0e0" if dark else "#202020",
                      font_size=int(rng.integers(20, 40)), noise=float(rng.uniform(0, 6)),
                      seed=seed)


# fmt -> libsndfile's (format, subtype); OPUS is OGG Opus (8, 12, 16, 24 or 48 kHz only), MP3
# and AIFF are there to be refused.
_AUDIO_CODECS = {"WAV": ("WAV", "PCM_16"), "FLAC": ("FLAC", "PCM_16"), "OGG": ("OGG", "VORBIS"),
                 "OPUS": ("OGG", "OPUS"), "MP3": ("MP3", "MPEG_LAYER_III"),
                 "AIFF": ("AIFF", "PCM_16")}


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: str = "WAV") -> bytes:
    """``samples`` (float, mono or (n, channels)) encoded as ``fmt`` (``_AUDIO_CODECS``)."""
    buf = io.BytesIO()
    major, subtype = _AUDIO_CODECS[fmt.upper()]
    sf.write(buf, np.clip(samples, -1.0, 1.0), sample_rate, format=major, subtype=subtype)
    return buf.getvalue()


def speech_samples(text: str, *, voice: str = "en-us", wpm: int = 160, pitch: int = 50,
                   amplitude: int = 100, shout: bool = False) -> tuple[np.ndarray, int]:
    """espeak-ng's rendering of ``text`` as float32 mono samples and its rate (22,050 Hz).

    ``shout=True`` speaks at espeak-ng's maximum amplitude and a high pitch (``-a 200 -p 80``),
    then drives the result +12 dB into a soft clipper (tanh), as a shout into a phone does: the
    loudness reaches about -7 LUFS where the plain voice is about -21 LUFS (see core.media).
    """
    if shout:
        amplitude, pitch = 200, 80
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch),
                        "-a", str(amplitude), "-w", str(out), text],
                       check=True, capture_output=True, timeout=60)
        samples, rate = sf.read(str(out), dtype="float32", always_2d=False)
    if shout:
        gain = 10 ** (12 / 20)
        samples = np.tanh(samples * gain) / np.tanh(gain)
    return samples.astype(np.float32), int(rate)


def speech(text: str, *, voice: str = "en-us", wpm: int = 160, pitch: int = 50,
           amplitude: int = 100, noise_db: float | None = None, shout: bool = False,
           fmt: str = "WAV", sample_rate: int | None = None, seed: int = 0,
           pad_s: float = 0.0) -> bytes:
    """Synthesised speech, encoded as ``fmt`` (WAV, FLAC, OGG, OPUS, MP3, AIFF).

    Args:
        noise_db: white noise added at this signal-to-noise ratio (dB), if given.
        sample_rate: resample to this rate (default: espeak-ng's 22,050 Hz).
        pad_s: seconds of silence before and after the speech.
    """
    from scipy.signal import resample_poly

    samples, rate = speech_samples(text, voice=voice, wpm=wpm, pitch=pitch,
                                   amplitude=amplitude, shout=shout)
    if sample_rate is not None and sample_rate != rate:
        g = np.gcd(sample_rate, rate)
        samples = resample_poly(samples, sample_rate // g, rate // g).astype(np.float32)
        rate = sample_rate
    if pad_s > 0:
        pad = np.zeros(int(pad_s * rate), np.float32)
        samples = np.concatenate([pad, samples, pad])
    if noise_db is not None:
        rng = np.random.default_rng(seed)
        power = float(np.mean(samples[np.abs(samples) > 1e-4] ** 2)) if samples.any() else 1e-6
        noise = rng.normal(0.0, np.sqrt(power / 10 ** (noise_db / 10)), samples.shape)
        samples = samples + noise.astype(np.float32)
    return encode_audio(samples, rate, fmt)


# (text, espeak-ng arguments as "voice/wpm"): threats, self-harm, benign chat; several voices
# and speeds, so a transcriber that only hears one synthetic voice is caught.
ASR_SET: list[tuple[str, str]] = [
    ("I will find you and hurt you tomorrow", "en-us/160"),
    ("I am going to kill myself tonight", "en-gb/150"),
    ("see you at lunch on Friday", "en-us+f3/170"),
    ("the meeting moved to three o'clock", "en-gb/140"),
    ("you are a worthless idiot and everyone hates you", "en-us/180"),
    ("thanks for sending the photos of the kids", "en+f3/160"),
    ("I want to end my life", "en-us/130"),
    ("the train is late again this morning", "en-gb-x-rp/160"),
    ("give me the money or I will burn your house down", "en-us+m3/150"),
    ("happy birthday to your sister", "en-us/200"),
    ("nobody would miss me if I was gone", "en+f2/150"),
    ("can you pick up some milk on the way home", "en-gb/170"),
]


def asr_voice(spec: str) -> tuple[str, int]:
    """``"en-us+f3/170"`` -> (``"en-us+f3"``, 170)."""
    voice, _, wpm = spec.partition("/")
    return voice, int(wpm or 160)


_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> list[str]:
    return [w.strip("'") for w in _WORD.findall(text.lower()) if w.strip("'")]


def wer(ref: str, hyp: str) -> float:
    """Word error rate of ``hyp`` against ``ref`` (Levenshtein over words, lower-cased,
    punctuation dropped); 0.0 for two empty texts, 1.0 for an empty hypothesis."""
    r, h = _words(ref), _words(hyp)
    if not r:
        return 0.0 if not h else 1.0
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[len(h)] / len(r)
