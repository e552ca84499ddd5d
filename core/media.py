"""Images and voice clips as the moderation API receives them: decoded under the platform's
limits, hashed, and measured for acoustic cues. Pure functions, no model weights (those are in
``core.media_models``).

Every refusal is a ``MediaError`` whose message says what is wrong, the limit or setting it
broke, and how to fix it; the API returns it as a 422.

Acoustic cue thresholds, measured on espeak-ng 1.51 speech (the twelve voices and speeds of
``tests.media_samples.ASR_SET``) at 16 kHz:

* shouting (``SHOUT_LUFS = -8``, on the loudest 400 ms window): the plain voice (``-a 100``)
  is -22.0 to -18.2 LUFS integrated, its loudest window -20.2 to -16.5 LUFS; espeak-ng's
  maximum amplitude and a high pitch (``-a 200 -p 80``), a raised voice, -14.9 to -11.3 and
  -13.2 to -9.7 LUFS; that voice driven +12 dB into a soft clipper (``tests.media_samples``'
  shout, as a shout into a phone clips) -7.2 to -5.3 and -5.8 to -3.9 LUFS. Loudness is
  relative to full scale, so it also depends on the microphone's gain: a cue for review,
  never a verdict.
* burst (``BURST_DB = 10``): plain, raised or shouted speech alone, after 1 s of silence or
  3 s of noise, with pauses, in 20 dB SNR noise, or a plain sentence followed by a shouted one
  rises at most 7.2 dB; inside plain speech, a 0.3 s shouted word (-6 LUFS) 13.8 dB, white
  noise bangs (standard deviation 0.5 to 0.8 of full scale) of 0.2 to 0.3 s 13.4 to 16.1 dB
  and of 0.1 s 9.5 to 11.8 dB (the 400 ms window averages them down), a bang after a second
  of silence 19.6 dB, the same bursts 6 dB quieter 4.7 to 10.2 dB; a bang over a quiet tone
  27.5 dB. A lone word in a clip of background noise reads as a burst (19.1 dB): it is one,
  to this measure.
* speech rate (``MAX_WORDS_PER_S = 6``, words per voiced second): espeak-ng at 130 words per
  minute reads 3.0, 160 -> 3.6, 200 -> 4.4, 250 -> 5.5, 300 -> 6.4-6.7 (Whisper tiny.en
  starts to drop words past 300).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

__all__ = [
    "MediaError", "decode_base64", "DecodedImage", "decode_image", "DecodedAudio",
    "decode_audio", "pdq_hash", "hash_distance", "AcousticCues", "acoustic_cues",
    "cue_reasons", "IMAGE_FORMATS", "AUDIO_FORMATS", "AUDIO_RATE", "SHOUT_LUFS", "BURST_DB",
    "MAX_WORDS_PER_S",
]

IMAGE_FORMATS = ("png", "jpeg", "webp")
AUDIO_FORMATS = ("wav", "flac", "ogg")
AUDIO_RATE = 16_000  # what the voice activity model and Whisper read

# Default cue thresholds: the measurements behind them are in the module docstring.
SHOUT_LUFS = -8.0
BURST_DB = 10.0
MAX_WORDS_PER_S = 6.0

# Pillow's format names -> ours. MPO is the multi-picture JPEG phone cameras write: its first
# picture is an ordinary JPEG (the others are depth or preview images).
_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp"}
# libsndfile's major formats -> ours (WAVEX is WAVE_FORMAT_EXTENSIBLE, RF64 a WAV past 4 GiB).
_SF_FORMATS = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "FLAC": "flac", "OGG": "ogg"}
_MIN_RATE, _MAX_RATE = 8_000, 192_000

_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+(;[\w.+-]+=[\w.+-]+)*;base64,", re.I)
_WHITESPACE = re.compile(r"\s+")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class MediaError(ValueError):
    """An image or audio clip that cannot be accepted; the message says why and what to send."""


def _limit(setting: str | None) -> str:
    return f" ({setting})" if setting else ""


# --- base64 -------------------------------------------------------------------------------------

def decode_base64(value: str, field: str, max_bytes: int, *, setting: str | None = None) -> bytes:
    """The bytes of a base64 field, refused cheaply when too big.

    Standard base64 (RFC 4648 section 4, ``+`` and ``/``, padded) is required; ASCII whitespace
    (MIME line breaks) is ignored, and a ``data:<type>;base64,`` prefix (what a browser's
    ``FileReader.readAsDataURL`` gives) is stripped: the type it names is not trusted, the
    format is read from the bytes. The encoded length is checked against ``max_bytes`` before
    anything is decoded.

    Args:
        value: the field's text.
        field: the field's name, for the message (``"image_base64"``).
        max_bytes: the most decoded bytes accepted.
        setting: the setting ``max_bytes`` comes from, for the message.
    """
    if not isinstance(value, str):
        raise MediaError(f"{field} must be a base64 string, not {type(value).__name__}")
    encoded_limit = 4 * -(-max_bytes // 3)
    # Line breaks every 76 characters (MIME) add at most 2/76; anything longer is too big
    # whatever it holds, so refuse it before copying or decoding it.
    if len(value) > encoded_limit + encoded_limit // 38 + 64:
        raise MediaError(
            f"{field} is {len(value):,} characters of base64 (about {len(value) * 3 // 4:,} "
            f"bytes); the limit is {max_bytes:,} bytes{_limit(setting)}: send a smaller file")
    prefix = _DATA_URL.match(value)
    if prefix:
        value = value[prefix.end():]
    elif value[:5].lower() == "data:":
        raise MediaError(f"{field} starts with a data: URL that is not base64 "
                         "('data:<type>;base64,...'): send the base64 of the file's bytes")
    text = _WHITESPACE.sub("", value)
    if not text:
        raise MediaError(f"{field} is empty: send the base64 of the file's bytes")
    if len(text) > encoded_limit:
        raise MediaError(
            f"{field} holds about {len(text) * 3 // 4:,} bytes; the limit is {max_bytes:,} "
            f"bytes{_limit(setting)}: send a smaller file")
    if "-" in text or "_" in text:
        raise MediaError(f"{field} uses the URL-safe base64 alphabet ('-' and '_'): send "
                         "standard base64 ('+' and '/', as Python's base64.b64encode writes)")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"{field} is not valid base64: {exc} (send standard, padded base64 "
                         "of the file's bytes)") from None
    if len(data) > max_bytes:
        raise MediaError(f"{field} holds {len(data):,} bytes; the limit is {max_bytes:,} "
                         f"bytes{_limit(setting)}: send a smaller file")
    return data


# --- images -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecodedImage:
    """An accepted image: its pixels upright (EXIF orientation applied), RGB, alpha flattened
    onto white; ``width`` and ``height`` are those of ``rgb``."""

    rgb: np.ndarray
    format: str
    width: int
    height: int
    n_bytes: int
    sha256: str


def _image_format(name: str | None) -> str:
    fmt = _PIL_FORMATS.get((name or "").upper())
    if fmt is None:
        shown = name or "unknown"
        raise MediaError(f"image format {shown} is not accepted: send PNG, JPEG or WebP")
    return fmt


def _to_rgb(img: Any) -> np.ndarray:
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greys: Pillow's convert("RGB") clips them at 255, so scale instead.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.stack([grey] * 3, axis=-1))
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Decode a PNG, JPEG or WebP image, refusing anything else before its pixels are read.

    The format and the pixel count come from the header (``Image.open`` reads only that);
    Pillow's decompression-bomb check is a second guard. A multi-frame image (animated PNG or
    WebP) is refused: scoring only its first frame would let the others through.

    Raises:
        MediaError: too many bytes or pixels, another format, several frames, or data that
            does not decode (truncated, corrupt).
    """
    from PIL import Image, ImageOps

    n = len(data)
    if n > max_bytes:
        raise MediaError(f"image is {n:,} bytes; the limit is {max_bytes:,} "
                         "(limits.max_image_bytes): send a smaller or more compressed image")
    if n == 0:
        raise MediaError("image is empty (0 bytes): send a PNG, JPEG or WebP file")
    with warnings.catch_warnings():
        # Our own pixel limit is checked below; Pillow's warning threshold is its own default.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise MediaError(f"image is too large to decode safely ({exc}); the limit is "
                             f"{max_pixels:,} pixels (limits.max_image_pixels): downscale "
                             "it") from None
        except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError
            raise MediaError(f"image could not be read ({type(exc).__name__}: {exc}): send a "
                             "PNG, JPEG or WebP file") from None
        with img:
            fmt = _image_format(img.format)
            width, height = img.size
            if width * height > max_pixels:
                raise MediaError(
                    f"image is {width}x{height} = {width * height:,} pixels; the limit is "
                    f"{max_pixels:,} (limits.max_image_pixels): downscale it")
            frames = int(getattr(img, "n_frames", 1) or 1)
            if frames > 1 and img.format != "MPO":
                raise MediaError(f"image has {frames} frames (an animation): send one still "
                                 "frame as PNG, JPEG or WebP")
            try:
                img.load()
                upright = ImageOps.exif_transpose(img)
                rgb = _to_rgb(upright if upright is not None else img)
            except Image.DecompressionBombError as exc:
                raise MediaError(f"image is too large to decode safely ({exc}) "
                                 "(limits.max_image_pixels): downscale it") from None
            except Exception as exc:  # truncated or corrupt data: OSError, ValueError, ...
                raise MediaError(f"image {fmt.upper()} data is truncated or corrupt "
                                 f"({type(exc).__name__}: {exc}): send the complete file") \
                    from None
    h, w = rgb.shape[:2]
    return DecodedImage(rgb=rgb, format=fmt, width=int(w), height=int(h), n_bytes=n,
                        sha256=hashlib.sha256(data).hexdigest())


# --- audio --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecodedAudio:
    """An accepted voice clip: ``samples`` is mono float32 at 16 kHz (``AUDIO_RATE``);
    ``sample_rate`` and ``channels`` are the file's own."""

    samples: np.ndarray
    sample_rate: int
    channels: int
    format: str
    duration_s: float
    n_bytes: int
    sha256: str


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import resample_poly

    if rate == AUDIO_RATE:
        return x
    ratio = Fraction(AUDIO_RATE, rate)
    if max(ratio.numerator, ratio.denominator) > 1000:
        # An odd rate (e.g. 44,101 Hz) would need a filter of millions of taps; the nearest
        # ratio with terms up to 1,000 is off by under 0.01 %, which no model here can hear.
        ratio = ratio.limit_denominator(1000)
    return resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)


def _sf_message(exc: Exception) -> str:
    """libsndfile's words without soundfile's "Error opening <_io.BytesIO object at 0x...>"."""
    return re.sub(r"^Error opening <[^>]*>: ", "", str(exc)).strip() or type(exc).__name__


def _sniff_mpeg(data: bytes) -> str | None:
    """MP3 (an ID3 tag or an MPEG audio frame) or AAC (an ADTS frame), which libsndfile may not
    name itself."""
    if data[:3] == b"ID3":
        return "MP3"
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        return "AAC" if (data[1] >> 1) & 0x3 == 0 else "MP3"
    return None


def decode_audio(data: bytes, *, max_bytes: int, max_seconds: float) -> DecodedAudio:
    """Decode a WAV, FLAC or OGG (Vorbis or Opus) clip to 16 kHz mono.

    The duration is read from the header (frames / sample rate) before any sample is; the
    channels are averaged; the resampling is polyphase (``scipy.signal.resample_poly``).
    Silence is a valid clip; a clip of no samples is not. A WAV cut short decodes to the
    samples it holds (libsndfile reads what is there), so what is moderated is what was sent;
    a cut FLAC or OGG file does not decode and is refused.

    Raises:
        MediaError: too many bytes or seconds, another format (MP3, AAC, ...), an
            unsupported sample rate, no samples, or data that does not decode.
    """
    import soundfile as sf

    n = len(data)
    if n > max_bytes:
        raise MediaError(f"audio is {n:,} bytes; the limit is {max_bytes:,} "
                         "(limits.max_audio_bytes): send shorter turns or a compressed format "
                         "(FLAC, OGG)")
    if n == 0:
        raise MediaError("audio is empty (0 bytes): send a WAV, FLAC or OGG file")
    sniffed = _sniff_mpeg(data)
    if sniffed:
        raise MediaError(f"audio format {sniffed} is not accepted: send WAV, FLAC or OGG "
                         "(Vorbis or Opus)")
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:  # soundfile.LibsndfileError, RuntimeError
        raise MediaError(f"audio could not be read ({_sf_message(exc)}): send a complete WAV, "
                         "FLAC or OGG (Vorbis or Opus) file") from None
    fmt = _SF_FORMATS.get(str(info.format).upper())
    if fmt is None:
        raise MediaError(f"audio format {info.format} is not accepted: send WAV, FLAC or OGG "
                         "(Vorbis or Opus)")
    rate, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
    if not _MIN_RATE <= rate <= _MAX_RATE:
        raise MediaError(f"audio sample rate {rate:,} Hz is not accepted: send "
                         f"{_MIN_RATE:,} to {_MAX_RATE:,} Hz (16,000 is best)")
    if frames <= 0:
        raise MediaError("audio has no samples: send a clip of at least a fraction of a second")
    duration = frames / rate
    if duration > max_seconds:
        raise MediaError(f"audio is {duration:.1f} s; the limit is {max_seconds:g} s "
                         "(limits.max_audio_seconds): send shorter turns")
    # Read one frame past the limit at most: a header that under-reports the length of a
    # compressed stream cannot make us decode more than that.
    cap = int(max_seconds * rate) + 1
    try:
        raw, _ = sf.read(io.BytesIO(data), frames=cap, dtype="float32", always_2d=True)
    except Exception as exc:
        raise MediaError(f"audio {fmt.upper()} data is truncated or corrupt "
                         f"({_sf_message(exc)}): send the complete file") from None
    if raw.shape[0] == 0:
        raise MediaError("audio has no samples: send a clip of at least a fraction of a second")
    if raw.shape[0] >= cap:
        raise MediaError(f"audio is longer than its header says and than the limit of "
                         f"{max_seconds:g} s (limits.max_audio_seconds): send shorter turns")
    mono = raw.mean(axis=1) if raw.shape[1] > 1 else raw[:, 0]
    samples = np.ascontiguousarray(_resample(mono.astype(np.float32), rate), dtype=np.float32)
    return DecodedAudio(samples=samples, sample_rate=rate, channels=channels, format=fmt,
                        duration_s=raw.shape[0] / rate, n_bytes=n,
                        sha256=hashlib.sha256(data).hexdigest())


# --- perceptual hashes --------------------------------------------------------------------------

def pdq_hash(rgb: np.ndarray) -> tuple[str, int]:
    """The PDQ hash of an RGB image (64 hex digits, 256 bits) and its quality (0-100).

    Meta's PDQ reference: copies re-encoded, resized or lightly edited stay within 31 bits;
    hashes of quality under 50 (flat, featureless images) match too easily to act on.
    """
    import pdqhash

    arr = np.ascontiguousarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"pdq_hash needs an (H, W, 3) uint8 image, got shape {arr.shape}")
    bits, quality = pdqhash.compute(arr)
    packed = np.packbits(np.asarray(bits, dtype=np.uint8))
    return packed.tobytes().hex(), int(quality)


def hash_distance(a: str, b: str) -> int:
    """Bits that differ between two PDQ hashes (0-256).

    Raises:
        ValueError: either is not 64 hex digits.
    """
    for h in (a, b):
        if not isinstance(h, str) or not _HEX64.match(h):
            raise ValueError(f"{h!r} is not a PDQ hash (64 hex digits)")
    return (int(a, 16) ^ int(b, 16)).bit_count()


# --- acoustic cues ------------------------------------------------------------------------------

_BLOCK_S, _HOP_S = 0.4, 0.1  # BS.1770 momentary loudness: 400 ms windows every 100 ms
_CONTEXT_S = 1.5  # a burst is measured against the 1.5 s before its window
_FLOOR_LUFS = -70.0  # BS.1770's absolute gate: quieter windows count as this
# A burst's baseline is never below the clip's typical loudness minus this, so that starting to
# talk after silence or background noise is not a burst. "Typical" is the median of the windows
# within 10 LU (BS.1770's relative gate) of the median of the louder half of the windows: the
# silence and the noise fall below it, and a bang louder than everything else (which would lift
# BS.1770's own gate over the talk around it) does not move it. Measured: speech after 1 s of
# silence or 3 s of 20 dB SNR noise rises at most 7.2 dB over it.
_ONSET_LU = 3.0
_RELATIVE_GATE_LU = 10.0
_LOUD_SPAN_LU = 3.0  # the loud span: contiguous windows within this of the loudest


@dataclass(frozen=True)
class AcousticCues:
    """How a clip sounds, beyond its words.

    Attributes:
        loudness_lufs: integrated loudness (ITU-R BS.1770-4, gated); None for a clip shorter
            than one 400 ms window or one of digital silence (BS.1770 gives -inf).
        max_momentary_lufs: the loudest 400 ms window (100 ms hop); None as above.
        burst_db: the largest rise of a window's momentary loudness over the median of the
            1.5 s before it, or over the clip's typical loudness minus 3 LU where that is
            higher (so starting to talk after a pause is not a burst); 0 when none. The
            400 ms window averages a shorter bang: one of 0.1 s reads about 6 dB lower.
        burst_at_s: where the window with that rise starts; None when there is none.
        loud_span: start and end (s) of the contiguous windows within 3 LU of the loudest.
        speech_s: voiced seconds (from the voice activity model).
        speech_rate_wps: words per voiced second; None without voiced audio.
        duration_s: the clip's length.
    """

    loudness_lufs: float | None
    max_momentary_lufs: float | None
    burst_db: float
    burst_at_s: float | None
    loud_span: tuple[float, float] | None
    speech_s: float
    speech_rate_wps: float | None
    duration_s: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AcousticCues:
        """The cues back from :meth:`as_dict` (as the media deployment sends them)."""
        span = d.get("loud_span")
        return cls(loudness_lufs=d.get("loudness_lufs"),
                   max_momentary_lufs=d.get("max_momentary_lufs"),
                   burst_db=float(d.get("burst_db") or 0.0), burst_at_s=d.get("burst_at_s"),
                   loud_span=None if span is None else (float(span[0]), float(span[1])),
                   speech_s=float(d.get("speech_s") or 0.0),
                   speech_rate_wps=d.get("speech_rate_wps"),
                   duration_s=float(d.get("duration_s") or 0.0))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values, rounded (0.1 LU, 0.01 s)."""
        def r(x: float | None, nd: int) -> float | None:
            return None if x is None else round(float(x), nd)
        return {
            "loudness_lufs": r(self.loudness_lufs, 1),
            "max_momentary_lufs": r(self.max_momentary_lufs, 1),
            "burst_db": round(float(self.burst_db), 1),
            "burst_at_s": r(self.burst_at_s, 2),
            "loud_span": None if self.loud_span is None
            else [round(self.loud_span[0], 2), round(self.loud_span[1], 2)],
            "speech_s": round(float(self.speech_s), 2),
            "speech_rate_wps": r(self.speech_rate_wps, 2),
            "duration_s": round(float(self.duration_s), 2),
        }


def _loudness(x: np.ndarray, rate: int) -> tuple[float, np.ndarray]:
    """Integrated loudness and the momentary loudness of each 400 ms window (100 ms hop)."""
    import pyloudnorm

    meter = pyloudnorm.Meter(rate, block_size=_BLOCK_S, overlap=1 - _HOP_S / _BLOCK_S)
    with warnings.catch_warnings(), np.errstate(divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # log10(0) of silent windows
        integrated = float(meter.integrated_loudness(x.astype(np.float64)))
    momentary = np.asarray(meter.blockwise_loudness, dtype=np.float64)
    return integrated, momentary


def _burst(momentary: np.ndarray) -> tuple[float, int | None]:
    m = np.maximum(np.nan_to_num(momentary, nan=_FLOOR_LUFS, neginf=_FLOOR_LUFS), _FLOOR_LUFS)
    active = m[m > _FLOOR_LUFS]
    if active.size == 0:
        return 0.0, None
    louder_half = np.sort(active)[active.size // 2:]
    typical = float(np.median(active[active > np.median(louder_half) - _RELATIVE_GATE_LU]))
    onset_floor = typical - _ONSET_LU
    per_block, span = round(_BLOCK_S / _HOP_S), round(_CONTEXT_S / _HOP_S)
    best, at = 0.0, None
    for j in range(per_block, len(m)):
        # the windows that end by the time window j starts, within the 1.5 s before it
        before = m[max(0, j - span):j - per_block + 1]
        baseline = max(float(np.median(before)), onset_floor)
        rise = float(m[j]) - baseline
        if rise > best:
            best, at = rise, j
    return best, at


def acoustic_cues(samples: np.ndarray, sample_rate: int, *, speech_s: float,
                  n_words: int) -> AcousticCues:
    """Loudness, bursts and speech rate of a mono clip.

    Args:
        samples: mono float samples in -1..1 (``DecodedAudio.samples``).
        sample_rate: their rate.
        speech_s: voiced seconds (``VoiceActivity.speech_spans``, summed).
        n_words: words in the transcript of the voiced audio.
    """
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    duration = x.size / sample_rate if sample_rate > 0 else 0.0
    rate_wps = n_words / speech_s if speech_s > 0 else None
    if x.size < _BLOCK_S * sample_rate:  # BS.1770 measures nothing shorter than a window
        return AcousticCues(None, None, 0.0, None, None, float(speech_s), rate_wps, duration)
    integrated, momentary = _loudness(x, sample_rate)
    finite = np.isfinite(momentary) & (momentary > _FLOOR_LUFS)
    if not finite.any():  # digital silence
        return AcousticCues(None, None, 0.0, None, None, float(speech_s), rate_wps, duration)
    loudest = int(np.argmax(np.where(finite, momentary, -np.inf)))
    top = float(momentary[loudest])
    lo = hi = loudest
    near = finite & (momentary >= top - _LOUD_SPAN_LU)
    while lo > 0 and near[lo - 1]:
        lo -= 1
    while hi + 1 < len(momentary) and near[hi + 1]:
        hi += 1
    loud_span = (lo * _HOP_S, min(duration, hi * _HOP_S + _BLOCK_S))
    burst, at = _burst(momentary)
    return AcousticCues(
        loudness_lufs=integrated if np.isfinite(integrated) else None,
        max_momentary_lufs=top,
        burst_db=burst,
        burst_at_s=None if at is None else at * _HOP_S,
        loud_span=loud_span,
        speech_s=float(speech_s),
        speech_rate_wps=rate_wps,
        duration_s=duration,
    )


def cue_reasons(cues: AcousticCues, *, shout_lufs: float | None = SHOUT_LUFS,
                burst_db: float | None = BURST_DB,
                max_words_per_s: float | None = MAX_WORDS_PER_S) -> list[dict[str, Any]]:
    """A reason per fired cue (a threshold of None turns its cue off), with the span it covers:

    ``{"kind": "acoustic", "cue": "shouting" | "burst" | "speech_rate", "value": ...,
    "threshold": ..., "span": [start_s, end_s]}``; the caller adds the action.
    """
    out: list[dict[str, Any]] = []

    def reason(cue: str, value: float, threshold: float, span: tuple[float, float]) -> None:
        out.append({"kind": "acoustic", "cue": cue, "value": round(float(value), 2),
                    "threshold": threshold, "span": [round(span[0], 2), round(span[1], 2)]})

    top = cues.max_momentary_lufs
    if shout_lufs is not None and top is not None and top >= shout_lufs:
        reason("shouting", top, shout_lufs, cues.loud_span or (0.0, cues.duration_s))
    if burst_db is not None and cues.burst_at_s is not None and cues.burst_db >= burst_db:
        reason("burst", cues.burst_db, burst_db,
               (cues.burst_at_s, min(cues.duration_s, cues.burst_at_s + _BLOCK_S)))
    rate = cues.speech_rate_wps
    if max_words_per_s is not None and rate is not None and rate >= max_words_per_s:
        reason("speech_rate", rate, max_words_per_s, (0.0, cues.duration_s))
    return out
