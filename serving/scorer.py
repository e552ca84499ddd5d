"""The Scorer deployment: the shared encoder and all heads, batched across concurrent requests.

It follows the registry's ``@champion`` alias: a background thread polls MLflow, loads a new
champion beside the serving one, then switches with one assignment. A batch keeps the model it
started with, so requests in flight finish on their version, and every result names it. The
replaced version stays loaded, so a rollback to it is instant. A version that fails to load
(missing or corrupt artifact) is not switched to: serving stays on the old one and says so in
the logs and in ``status()`` (``/readyz``).

One call carries a list of texts (one request's items); ``@serve.batch`` gathers calls until
``max_batch_size`` *items* (not calls) are waiting, so a 32-item request and 32 single-item
requests batch alike. Encoding runs in a worker thread so the replica keeps accepting calls
while a batch computes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve

from bastion.core.cascade import cascade_status
from bastion.core.errors import RegistryEmptyError
from bastion.core.model import ModelMetadata, ModerationModel
from bastion.core.settings import load_settings
from bastion.registry.aliases import CHAMPION, SHADOW
from bastion.serving.resilience import Reachability

__all__ = ["Scorer", "ScoreResult", "LoadedModel", "items_in"]

NUMERICS_CACHE = "numerics.json"  # in the state directory: auto's choice per machine

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
    stages: np.ndarray | None = None  # core.cascade.Stage per item; None: no cascade

    def split(self, sizes: list[int]) -> list[ScoreResult]:
        """Consecutive parts of ``sizes`` items each (the calls one batch served)."""
        out, start = [], 0
        for n in sizes:
            out.append(ScoreResult(
                self.model_version, self.embeddings[start:start + n],
                self.scores[start:start + n],
                None if self.stages is None else self.stages[start:start + n]))
            start += n
        return out


def items_in(batch: list[Any]) -> int:
    """``@serve.batch``'s size of a batch of calls that each carry a list of texts: items,
    not calls."""
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
        champion_poll_s: float = 2.0,
        alias: str = CHAMPION,
        canary_check_s: float = 60.0,
    ) -> None:
        """``alias``: the registry alias this Scorer follows: ``champion``, ``multilingual``
        for the deployment that scores the languages routed to it, or ``shadow`` for the
        challenger of a shadow run (``registry.shadow``), whose settings it reads with the
        alias and whose canary it guards every ``canary_check_s``."""
        # torch and MLflow load here, not at import: the ingress replicas import this module
        # too (serving.app binds both deployments) and need neither.
        import torch

        torch.set_num_threads(torch_threads or os.cpu_count() or 1)
        self.settings = load_settings(
            state_dir, mlflow_tracking_uri=tracking_uri, model_name=model_name
        )
        self.precision = precision
        self._current: LoadedModel | None = None
        self._previous: LoadedModel | None = None
        self._pinned: str | None = None
        self._failed: dict[str, str] = {}
        self.swaps: list[dict[str, Any]] = []
        self.batches = 0
        self.encode_s = 0.0
        self.items = 0
        self.load_error: str | None = None
        # @serve.batch adds these setters at run time; mypy sees the plain coroutine.
        self.score_batch.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self.score_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]
        from bastion.registry.store import ModelRegistry  # MLflow: see above

        self._registry = ModelRegistry(self.settings)
        self.registry_health = Reachability(f"MLflow registry {tracking_uri}")
        self._switch_lock = threading.Lock()
        self.alias = alias
        self.shadow: dict[str, Any] | None = None  # the shadow run's settings (alias shadow)
        self._canary_check_s = canary_check_s
        self._canary_checked = time.time()
        try:
            self._switch(self._registry.by_alias(alias).version)
        except RegistryEmptyError:
            if alias == CHAMPION:
                raise
            # the multilingual Scorer waits for its alias: the Ingress routes nothing to it
            # until it holds a version (status()["model_version"])
            log.info("Scorer: no @%s version yet; following the alias", alias)
        self._stop = threading.Event()
        self._poll_s = champion_poll_s
        self._watcher = threading.Thread(target=self._watch, name="champion-watch", daemon=True)
        self._watcher.start()

    def _loaded(self, version: str) -> LoadedModel:
        """The model of ``version``: already in memory (current or previous), else loaded."""
        for held in (self._current, self._previous):
            if held is not None and held.version == version:
                return held
        path = self._registry.download(version)
        model = ModerationModel.load(path, precision=self.precision,
                                     numerics_cache=self.settings.state_dir / NUMERICS_CACHE)
        model.metadata["version"] = version
        model.score(["warm up"])  # first call allocates; keep it off the request path
        return LoadedModel(version, model, time.time())

    def _switch(self, version: str) -> None:
        """Load ``version`` beside the serving model, then switch with one assignment.
        The watcher thread and ``reconfigure`` may both call this: one switch at a time."""
        with self._switch_lock:
            self._switch_locked(version)

    def _switch_locked(self, version: str) -> None:
        if self._current is not None and self._current.version == version:
            return
        if version in self._failed:
            return  # already reported; a new alias move tries again
        try:
            new = self._loaded(version)
        except Exception as err:  # noqa: BLE001 - any load failure keeps the old version serving
            msg = f"version {version} failed to load, still serving " \
                  f"{self._current.version if self._current else 'nothing'}: {err}"
            self._failed[version] = msg
            self.load_error = msg
            log.error("Scorer: %s", msg)
            if self._current is None:
                raise
            return
        old = self._current
        self._current = new  # batches that started before keep their own reference
        if old is not None:
            self._previous = old
        self.load_error = None
        self.swaps.append({"at": time.time(), "from": old.version if old else None,
                           "to": version})
        log.info("Scorer now serves %s version %s (was %s)", self.settings.model_name,
                 version, old.version if old else None)

    def _watch(self) -> None:
        while not self._stop.wait(self._poll_s):
            if self._pinned is not None:
                continue
            try:
                version = self._registry.by_alias(self.alias).version
            except RegistryEmptyError:
                # no version under this alias (yet, or any more): the champion's Scorer keeps
                # what it serves; the multilingual one stops (its languages go to @champion)
                if self.alias != CHAMPION and self._current is not None:
                    log.info("Scorer: @%s was removed; serving nothing", self.alias)
                    self._current = None
                self.shadow = None
                continue
            except Exception as err:  # noqa: BLE001 - registry unreachable: keep serving, retry
                log.warning("Scorer: cannot read @%s: %s", self.alias, err)
                self.registry_health.failed(err)
                continue
            self.registry_health.ok()
            if self._current is None or version != self._current.version:
                self._failed = {v: m for v, m in self._failed.items() if v == version}
                self._switch(version)
            if self.alias == SHADOW:
                self._follow_shadow()

    def _follow_shadow(self) -> None:
        """The shadow run's settings, as the Ingress reads them from ``status()``; and the
        canary guard, every ``canary_check_s`` (any replica may run it: taking a canary off
        twice is harmless)."""
        from bastion.registry.shadow import guard_canary, shadow_config  # MLflow: see __init__

        try:
            config = shadow_config(self._registry)
            if (config is not None and config.canary_active
                    and time.time() - self._canary_checked >= self._canary_check_s):
                self._canary_checked = time.time()
                why = guard_canary(self.settings, self._registry)
                if why is not None:
                    log.warning("Scorer: canary of v%s rolled back: %s", config.version,
                                why["why"])
                    config = shadow_config(self._registry)
        except Exception as err:  # noqa: BLE001 - keep the last settings, retry next poll
            log.warning("Scorer: cannot read the shadow run's settings: %s", err)
            return
        self.shadow = None if config is None else config.to_json()

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: ``{"model_version": "3"}`` pins a version; null follows @champion."""
        version = config.get("model_version")
        self._pinned = str(version) if version else None
        if self._pinned is not None:
            self._failed.pop(self._pinned, None)
            self._switch(self._pinned)

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.004, batch_size_fn=items_in)
    async def score_batch(self, batch: list[list[str]]) -> list[ScoreResult]:
        current = self._current
        if current is None:
            raise RegistryEmptyError(f"this Scorer follows @{self.alias}, which names no "
                                     "version yet")
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
        whole = ScoreResult(current.version, emb.astype(np.float16), scores)
        return whole.split([len(texts) for texts in batch])

    async def score(self, texts: list[str], cascade: bool = False) -> ScoreResult:
        if cascade:  # the cascade (core.cascade): the first stage may allow benign items
            return await self._score_cascade(texts)
        return await self.score_batch(texts)

    async def _score_cascade(self, texts: list[str]) -> ScoreResult:
        """The first stage routes the call; only what it is unsure of (and the audit share)
        joins the batch for the full model. A model swap in between: the full model, all."""
        current = self._current
        assert current is not None
        routing = current.model.route(texts)
        if routing is None:
            return await self.score_batch(texts)
        idx = routing.to_full
        emb = np.zeros((len(texts), current.model.encoder.dim), np.float16)
        full = np.zeros((0, len(current.model.head_keys)), np.float32)
        if len(idx):
            res = await self.score_batch([texts[i] for i in idx])
            if res.model_version != current.version:
                return res if len(idx) == len(texts) else await self.score_batch(texts)
            emb[idx], full = res.embeddings, res.scores
        return ScoreResult(current.version, emb, current.model.merge(routing, full),
                           routing.stage)

    def metadata(self, version: str | None = None) -> ModelMetadata:
        """A loaded version's metadata (heads, curves): what the ingress resolves policy with."""
        held = next((m for m in (self._current, self._previous)
                     if m is not None and (version is None or m.version == version)), None)
        if held is None:
            raise KeyError(f"version {version} is not loaded in this replica")
        return held.model.metadata

    def status(self) -> dict[str, Any]:
        import torch  # loaded by __init__ already; see there

        ctx = serve.get_replica_context()
        cur = self._current
        return {
            "replica_id": ctx.replica_id.unique_id,
            "pid": os.getpid(),
            "model_version": cur.version if cur else None,
            "alias": self.alias,
            "shadow": self.shadow if self.alias == SHADOW else None,
            "encoder": cur.model.encoder.identity["name"] if cur else None,
            "loaded_at": cur.loaded_at if cur else None,
            "load_error": self.load_error,
            "registry": self.registry_health.as_dict(),  # unreachable: serving goes on
            "previous_version": self._previous.version if self._previous else None,
            "pinned_version": self._pinned,
            "swaps": self.swaps[-5:],
            "batches": self.batches,
            "mean_batch_items": round(self.items / self.batches, 2) if self.batches else None,
            "mean_batch_ms": (
                round(1000 * self.encode_s / self.batches, 2) if self.batches else None
            ),
            "torch_threads": torch.get_num_threads(),
            "numerics": getattr(cur.model.encoder, "numerics", None) if cur else None,
            "cascade": cascade_status(cur.model.metadata.get("cascade")) if cur else None,
        }
