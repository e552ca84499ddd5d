"""Encoder numerics: how the backbone's matrices are computed (fp32, bf16, int8), and ``auto``,
which measures the candidates on the machine at hand and keeps the fastest that stays close to
fp32.

A numerics is a plug-in (``@register_numerics("name")``): ``available()`` says why it cannot
run here (None when it can) and ``apply(model)`` returns the model to run. ``auto`` never
trusts a CPU name: bf16 on an AVX2-only EPYC runs ~6x slower than fp32 although torch can
emulate it, so each candidate is timed on a fixed set of real-length texts at the batch sizes
the Scorer forms, and kept only if its embeddings stay within :data:`MIN_COSINE` of fp32's. The
choice is cached in a JSON file keyed by what decides it (CPU model and flags, the ISA limits
in the environment, torch version, threads, encoder fingerprint), so the next start reuses it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core._numerics_texts import PROBE_TEXTS
from bastion.core.errors import ModelError
from bastion.core.plugins import PluginRegistry

__all__ = [
    "Numerics",
    "NumericsChoice",
    "MIN_COSINE",
    "PROBE_BATCHES",
    "create_numerics",
    "register_numerics",
    "numerics_names",
    "choose",
    "cache_key",
]

# Mean cosine of a candidate's embeddings to fp32's over the probe texts must reach this.
# Measured on the whole held-out split (13,444 texts) against the 0.005-per-category AUROC
# bound: bf16 (> 0.9999) and int8 with the FFN kept fp32 (0.995) stay within it (largest
# change 0.002); int8 with only the FFN down-projections kept fp32 (0.981) lost 0.0085 on
# self_harm, every Linear in int8 (0.925) more. 0.99 sits between what passed and what failed.
MIN_COSINE = 0.99
# (batch size, items): the Scorer's max_batch_size is 64; live traffic also forms small ones.
PROBE_BATCHES = ((1, 4), (8, 16), (32, 64))
# A candidate slower than this times the best so far on the same work stops early: it cannot
# win, and bf16 emulated on AVX2 would otherwise spend ~10 s of the start.
GIVE_UP_RATIO = 1.5

_NUMERICS: PluginRegistry[Numerics] = PluginRegistry("numerics")
register_numerics = _NUMERICS.register
numerics_names = _NUMERICS.names


def create_numerics(name: str, **cfg: Any) -> Numerics:
    """A registered numerics; an unknown name raises and lists the known ones."""
    return _NUMERICS.create(name, **cfg)


@dataclass(frozen=True)
class Numerics:
    """One way to run the encoder: its name, why it cannot run here, and the conversion."""

    name: str
    available: Callable[[], str | None]
    apply: Callable[[Any], Any]


def bf16_supported() -> bool:
    """oneDNN's own check for native bf16 (avx512_bf16 / AMX); emulation does not count."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@register_numerics("fp32")
def _fp32() -> Numerics:
    return Numerics("fp32", lambda: None, lambda model: model)


@register_numerics("bf16")
def _bf16() -> Numerics:
    import torch

    def apply(model: Any) -> Any:
        # Convert the weights once: autocast would re-cast every matrix on every forward, a
        # fixed cost that dominates the small batches of live traffic (measured: 161 vs 235
        # items/s at batch 1). Cosine to fp32 embeddings stays above 0.9999.
        return copy.deepcopy(model).to(torch.bfloat16)

    return Numerics("bf16", lambda: None if bf16_supported() else
                    "this CPU has no native bf16 (oneDNN reports none)", apply)


def _ffn(name: str) -> bool:
    """A BERT layer's feed-forward Linears (``layer.N.intermediate.dense``, the up-projection,
    and ``layer.N.output.dense``, the down-projection), kept in fp32 by ``int8``. Per-tensor
    int8 activations cannot hold their outliers: one down-projection alone takes the mean
    cosine to fp32 from 1.0 to 0.97, and with both kept in int8 the starter's self_harm head
    lost 0.0085 held-out AUROC (docs/benchmarks.md, Numerics)."""
    return "intermediate.dense" in name or (
        name.endswith("output.dense") and ".attention." not in name)


@register_numerics("int8")
def _int8(keep_fp32: Callable[[str], bool] = _ffn) -> Numerics:
    import torch

    def available() -> str | None:
        engines = torch.backends.quantized.supported_engines
        if not {"x86", "fbgemm", "onednn"} & set(engines):
            return f"torch has no x86 int8 engine (has {engines})"
        return None

    def apply(model: Any) -> Any:
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

        # "x86" (fbgemm's dynamic kernels, with VNNI where the CPU has it) is torch's default
        # on x86; say so rather than depend on it.
        if "x86" in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = "x86"
        spec = {n: default_dynamic_qconfig for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and not keep_fp32(n)}
        with warnings.catch_warnings():
            # torch 2.13 deprecates eager-mode quantization in favour of torchao (not on the
            # pinned set); the kernels it calls are the same fbgemm ones and still supported.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            return quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)

    return Numerics("int8", available, apply)


@dataclass
class NumericsChoice:
    """What ``auto`` chose and why: shown in the Scorer's status (``/readyz``)."""

    chosen: str
    requested: str
    cached: bool = False
    key: str = ""
    # name -> {"items_per_s", "cosine_mean", "cosine_min", "passed", "note"}
    measured: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it cannot run here
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu() -> str:
    """CPU model and flags from /proc/cpuinfo (Linux); the platform string elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = flags = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = " ".join(sorted(value.split()))
    return f"{model}|{flags}"


def cache_key(fingerprint: str, threads: int, extra: str = "") -> str:
    """What decides the choice: CPU model and flags, the ISA limits torch and oneDNN are run
    under, torch version, intra-op threads and the encoder's weights."""
    import torch

    isa = ",".join(f"{v}={os.environ.get(v, '')}" for v in
                   ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"))
    raw = "|".join([_cpu(), isa, torch.__version__, str(threads), fingerprint, extra])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError):
        return {}  # a torn or foreign file: measure again and overwrite it
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, choice: NumericsChoice) -> None:
    data = _read_cache(path)
    data[key] = choice.as_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)  # replicas starting together: the last whole file wins


Encode = Callable[[Any, list[str], int], np.ndarray]


def _measure(run: Encode, model: Any, texts: list[str], budget_s: float | None,
             ) -> tuple[float | None, np.ndarray]:
    """Items/s over PROBE_BATCHES (None when it ran past ``budget_s``) and the embeddings of
    ``texts`` at the largest batch."""
    run(model, texts[:2], 2)  # first call allocates
    items = elapsed = 0.0
    emb = np.zeros((0, 0), dtype=np.float32)
    for batch, n in PROBE_BATCHES:
        t0 = time.perf_counter()
        emb = run(model, texts[:n], batch)
        elapsed += time.perf_counter() - t0
        items += n
        if budget_s is not None and elapsed > budget_s:
            return None, emb
    return items / elapsed, emb


def choose(
    model: Any,
    run: Encode,
    candidates: list[str] | None = None,
    cache: Path | None = None,
    key: str = "",
    texts: tuple[str, ...] = PROBE_TEXTS,
    factory: Callable[[str], Numerics] = create_numerics,
) -> tuple[Any, NumericsChoice]:
    """Time each available candidate against fp32 and return the fastest model whose
    embeddings stay within MIN_COSINE of fp32's, with the record of the choice.

    Args:
        model: the fp32 model.
        run: ``run(model, texts, batch_size)`` -> L2-normalised float32 embeddings.
        candidates: numerics names to try (default: all registered).
        cache: a JSON file of earlier choices; a hit under ``key`` skips the measurement.
        key: see :func:`cache_key`.
        texts: the probe texts (default: a fixed set of real-length posts).
        factory: name -> Numerics (default: the registry; tests pass fakes).
    """
    names = candidates if candidates is not None else numerics_names()
    if "fp32" not in names:
        names = ["fp32", *names]
    if cache is not None and key:
        hit = _read_cache(cache).get(key)
        if isinstance(hit, dict) and hit.get("chosen") in names:
            try:
                choice = NumericsChoice(**hit)
                num = factory(choice.chosen)
                if num.available() is None:
                    choice.cached = True
                    return num.apply(model), choice
            except (TypeError, ValueError):
                pass  # an older record's shape: measure again
    t_start = time.perf_counter()
    probe = list(texts)
    choice = NumericsChoice(chosen="fp32", requested="auto", key=key)
    ref_rate, ref = _measure(run, model, probe, None)
    assert ref_rate is not None
    choice.measured["fp32"] = {"items_per_s": round(ref_rate, 1), "cosine_mean": 1.0,
                               "cosine_min": 1.0, "passed": True}
    best, best_rate, best_model = "fp32", ref_rate, model
    work = sum(n for _, n in PROBE_BATCHES)
    for name in names:
        if name == "fp32":
            continue
        num = factory(name)
        why = num.available()
        if why is not None:
            choice.skipped[name] = why
            continue
        try:
            cand = num.apply(model)
        except Exception as err:  # noqa: BLE001 - a candidate that cannot convert is not chosen
            choice.skipped[name] = f"conversion failed: {err}"
            continue
        rate, emb = _measure(run, cand, probe, GIVE_UP_RATIO * work / best_rate)
        entry: dict[str, Any] = {"items_per_s": None, "cosine_mean": None, "cosine_min": None,
                                 "passed": False}
        if rate is not None:
            cos = (emb * ref).sum(1)
            entry.update(items_per_s=round(rate, 1), cosine_mean=round(float(cos.mean()), 5),
                         cosine_min=round(float(cos.min()), 5))
            entry["passed"] = entry["cosine_mean"] >= MIN_COSINE
        if rate is None:
            entry["note"] = f"stopped: over {GIVE_UP_RATIO}x the time of {best}"
        elif not entry["passed"]:
            entry["note"] = f"mean cosine to fp32 under {MIN_COSINE}"
        choice.measured[name] = entry
        if entry["passed"] and rate is not None and rate > best_rate:
            best, best_rate, best_model = name, rate, cand
    choice.chosen = best
    choice.seconds = round(time.perf_counter() - t_start, 2)
    if cache is not None and key:
        try:
            _write_cache(cache, key, choice)
        except OSError as err:
            raise ModelError(
                f"cannot write the numerics cache {cache}: {err}; make the state directory "
                "writable or pass an explicit precision"
            ) from None
    return best_model, choice
