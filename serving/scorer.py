"""The Scorer deployment: the shared encoder and all heads, batched across concurrent requests.

One call carries a list of texts (one request's items); ``@serve.batch`` gathers calls until
``max_batch_size`` *items* (not calls) are waiting, so a 32-item request and 32 single-item
requests batch alike. Encoding runs in a worker thread so the replica keeps accepting calls
while a batch computes.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve

from core.model import ModerationModel

__all__ = ["Scorer", "ScoreResult", "LoadedModel"]

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class LoadedModel:
    version: str
    model: ModerationModel
    loaded_at: float


@dataclass(frozen=True)
class ScoreResult:
    model_version: str
    embeddings: np.ndarray  # (n, dim) float16: what the event log keeps
    scores: np.ndarray  # (n, n_heads) float32


def _items(batch: list[Any]) -> int:
    return sum(len(texts) for texts in batch)


@serve.deployment(name="Scorer", ray_actor_options={"num_cpus": 1})
class Scorer:
    def __init__(
        self,
        state_dir: str,
        tracking_uri: str,
        model_name: str,
        max_batch_size: int = 64,
        batch_wait_timeout_s: float = 0.004,
        torch_threads: int = 0,
        precision: str = "auto",
    ) -> None:
        import torch

        from core.settings import load_settings

        torch.set_num_threads(torch_threads or os.cpu_count() or 1)
        self.settings = load_settings(
            state_dir, mlflow_tracking_uri=tracking_uri, model_name=model_name
        )
        self.precision = precision
        self._current: LoadedModel | None = None
        self.batches = 0
        self.encode_s = 0.0
        self.items = 0
        self.load_error: str | None = None
        # @serve.batch adds these setters at run time; mypy sees the plain coroutine.
        self.score_batch.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self.score_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]
        self._load(None)

    def _load(self, version: str | None) -> None:
        from registry.store import CHAMPION, ModelRegistry

        registry = ModelRegistry(self.settings)
        info = registry.get(version) if version else registry.by_alias(CHAMPION)
        path = registry.download(info.version)
        model = ModerationModel.load(path, precision=self.precision)
        model.metadata["version"] = info.version
        self._current = LoadedModel(info.version, model, time.time())
        log.info("Scorer loaded %s version %s", self.settings.model_name, info.version)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: ``{"model_version": "3"}`` pins a version (default @champion)."""
        version = config.get("model_version")
        if version and (self._current is None or self._current.version != str(version)):
            self._load(str(version))

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.004, batch_size_fn=_items)
    async def score_batch(self, batch: list[list[str]]) -> list[ScoreResult]:
        current = self._current
        assert current is not None
        flat = [t for texts in batch for t in texts]
        self.batches += 1
        self.items += len(flat)
        # Encode on this (user-code) event loop, not in a worker thread: Serve runs user code
        # on its own loop thread, so the replica keeps accepting calls, which then wait here
        # and form the next batch. A worker thread fought the request intake for the GIL
        # and batches shrank to ~1.7 items (measured; see docs/benchmarks.md).
        t0 = time.perf_counter()
        emb, scores = current.model.score(flat)
        self.encode_s += time.perf_counter() - t0
        out, start = [], 0
        for texts in batch:
            end = start + len(texts)
            out.append(ScoreResult(current.version, emb[start:end].astype(np.float16),
                                   scores[start:end]))
            start = end
        return out

    async def score(self, texts: list[str]) -> ScoreResult:
        return await self.score_batch(texts)

    def metadata(self) -> dict[str, Any]:
        """The loaded version's metadata (heads, curves): what the ingress resolves policy with."""
        assert self._current is not None
        meta = dict(self._current.model.metadata)
        meta["head_keys"] = self._current.model.head_keys
        return meta

    def status(self) -> dict[str, Any]:
        import torch

        ctx = serve.get_replica_context()
        cur = self._current
        return {
            "replica_id": ctx.replica_id.unique_id,
            "pid": os.getpid(),
            "model_version": cur.version if cur else None,
            "loaded_at": cur.loaded_at if cur else None,
            "load_error": self.load_error,
            "batches": self.batches,
            "mean_batch_items": round(self.items / self.batches, 2) if self.batches else None,
            "mean_batch_ms": (
                round(1000 * self.encode_s / self.batches, 2) if self.batches else None
            ),
            "torch_threads": torch.get_num_threads(),
        }
