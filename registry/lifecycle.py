"""Promotion and rollback of model versions: the gate decides, the aliases move, the audit
trail remembers who did what, when and why.

``promote`` scores the candidate and the current ``@champion`` on held-out human-labelled
data, runs the gate (``registry.gate``), stores the report with the candidate's run (a table
and JSON under ``gate/``) and its verdict in the version tag ``validation_status``, then moves
``@champion`` (or refuses, naming each failing tenant and category). ``--force`` promotes
anyway and is recorded as such. ``rollback`` moves ``@champion`` back to the champion before
it. Serving follows the alias by itself (``serving.scorer``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bastion.core.embcache import EmbeddingCache
from bastion.core.errors import BastionError, ModelError
from bastion.core.labelled import LabelledSet
from bastion.core.model import ModerationModel
from bastion.core.policy import PolicySet
from bastion.core.settings import Settings
from bastion.registry.evaluation import VersionEvaluation, evaluate_version
from bastion.registry.gate import run_gate
from bastion.registry.report import Check, GateReport
from bastion.registry.shadow import shadow_checks, shadow_config, stop_shadow
from bastion.registry.store import CHALLENGER, CHAMPION, ModelRegistry

__all__ = ["Lifecycle", "PromotionResult", "GateRefused"]

HISTORY_TAG = "bastion.champion_history"


class GateRefused(BastionError):
    """The gate rejected a version and it was not forced."""


@dataclass(frozen=True)
class PromotionResult:
    version: str
    promoted: bool
    forced: bool
    previous: str | None
    report: GateReport


class Lifecycle:
    """Gate, promote, roll back and audit the versions of one registered model."""

    def __init__(self, settings: Settings, policy: PolicySet,
                 eval_data: LabelledSet | None = None, latency_items: int = 100,
                 embeddings: dict[str, np.ndarray] | None = None,
                 registry: ModelRegistry | None = None) -> None:
        """``registry``: one already opened (and checked reachable) for ``settings``."""
        self.settings = settings
        self.policy = policy
        if registry is None:
            registry = ModelRegistry(settings)
            registry.ensure_reachable()  # a clear error now, not MLflow's minutes of retries
        self.registry = registry
        self.client = self.registry.client
        self.name = self.registry.name
        self._eval_data = eval_data
        self._latency_items = latency_items
        # held-out embeddings per backbone fingerprint; share the dict to reuse them
        self._embeddings: dict[str, np.ndarray] = {} if embeddings is None else embeddings
        self._encoders: dict[str, Any] = {}

    @property
    def eval_data(self) -> LabelledSet:
        """The held-out data every gate of this lifecycle measures on. Training builds it
        (``bastion.training.retrain.heldout_data``: the snapshot's test split), the same for
        ``bastion promote`` and a retraining run's own promotion."""
        if self._eval_data is None:
            raise ModelError("no held-out data to gate on: pass eval_data (the training "
                             "snapshot's test split) to Lifecycle")
        return self._eval_data

    # -- evaluation ----------------------------------------------------------------------
    def _load(self, version: str) -> ModerationModel:
        path = self.registry.download(version)
        meta = json.loads((path / "metadata.json").read_text())
        fingerprint = meta.get("encoder", {}).get("fingerprint")
        model = ModerationModel.load(path, encoder=self._encoders.get(fingerprint))
        self._encoders[model.encoder.identity["fingerprint"]] = model.encoder
        model.metadata["version"] = version
        return model

    def evaluate(self, version: str) -> VersionEvaluation:
        """Score the held-out data with ``version``; one encoder pass per backbone."""
        model = self._load(version)
        fp = model.encoder.identity["fingerprint"]
        data = self.eval_data
        if fp not in self._embeddings:
            cache = EmbeddingCache(self.settings.database_url, model.encoder)
            try:
                self._embeddings[fp] = cache.embed(data.texts)[0]
            finally:
                cache.close()
        scores = model.heads.score(self._embeddings[fp])
        latencies = []
        for text in data.texts[: self._latency_items]:
            t0 = time.perf_counter()
            model.score([text])
            latencies.append((time.perf_counter() - t0) * 1000)
        p99 = float(np.percentile(latencies, 99)) if latencies else None
        return evaluate_version(version, model.head_keys, model.metadata, scores, data.targets,
                                data.mask, data.categories, self.policy, p99_ms=p99)

    def gate(self, version: str) -> GateReport:
        """Run the gate for ``version`` against the current champion; store the report."""
        version = str(self.registry.get(version).version)
        champion = self._champion()
        try:
            candidate = self.evaluate(version)
        except ModelError as err:
            report = GateReport(candidate=version, champion=champion, passed=False, checks=[
                Check(None, None, "artifact_loads", False, None, None,
                      f"version {version} cannot be loaded: {err}")])
        else:
            baseline = self.evaluate(champion) if champion and champion != version else None
            report = run_gate(candidate, baseline, self.policy)
            shadow = shadow_checks(self.settings, self.registry, version, self.policy)
            if shadow:  # the policy asks for evidence from live traffic (gate.shadow_min_items)
                report = GateReport(candidate=version, champion=champion,
                                    passed=report.passed and not any(
                                        c.passed is False for c in shadow),
                                    checks=[*report.checks, *shadow])
        self._store(version, report)
        return report

    def _store(self, version: str, report: GateReport) -> None:
        info = self.registry.get(version)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        if info.run_id:
            self.client.log_dict(info.run_id, report.to_json(), f"gate/report-{stamp}.json")
            self.client.log_text(info.run_id, report.to_table(), f"gate/report-{stamp}.txt")
            self.client.log_text(info.run_id, report.to_table(), "gate/latest.txt")
        self.client.set_model_version_tag(self.name, version, "validation_status",
                                          "passed" if report.passed else "failed")
        self.client.set_model_version_tag(self.name, version, "bastion.gate_champion",
                                          report.champion or "")
        failing = sorted({f"{c.tenant}/{c.category}" if c.tenant else c.name
                          for c in report.failures()})
        self.client.set_model_version_tag(self.name, version, "bastion.gate_failures",
                                          ", ".join(failing)[:4000])

    # -- aliases -------------------------------------------------------------------------
    def _champion(self) -> str | None:
        try:
            return self.registry.by_alias(CHAMPION).version
        except ModelError:
            return None

    def history(self) -> list[str]:
        model = self.client.get_registered_model(self.name)
        raw = (model.tags or {}).get(HISTORY_TAG)
        if raw:
            return [str(v) for v in json.loads(raw)]
        champion = self._champion()
        return [champion] if champion else []

    def _set_champion(self, version: str, history: list[str]) -> None:
        self.client.set_registered_model_alias(self.name, CHAMPION, version)
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history[-50:]))

    def _audit(self, action: str, **fields: Any) -> dict[str, Any]:
        return self.registry.audit(action, **fields)

    def audit(self) -> list[dict[str, Any]]:
        """Every promotion, forced promotion, refusal, rollback and shadow run, oldest first."""
        return self.registry.audit_trail()

    def promote(self, version: str, *, force: bool = False, actor: str | None = None,
                reason: str | None = None) -> PromotionResult:
        """Gate ``version`` and make it ``@champion`` if it passes (or ``force``).

        Raises:
            GateRefused: the gate rejected it and ``force`` is not set (the report is stored).
        """
        version = str(self.registry.get(version).version)
        previous = self._champion()
        if previous == version:
            raise BastionError(f"version {version} is already @{CHAMPION}")
        self.client.set_registered_model_alias(self.name, CHALLENGER, version)
        report = self.gate(version)
        if not report.passed and not force:
            self._audit("refused", version=version, champion=previous, actor=actor,
                        reason=reason, failures=[c.message for c in report.failures()][:20])
            raise GateRefused(
                f"version {version} was not promoted; the gate failed:\n{report.to_table()}")
        if not report.passed and any(c.name == "artifact_loads" for c in report.failures()):
            raise GateRefused(f"version {version} cannot be loaded, even forced:\n"
                              f"{report.to_table()}")
        history = self.history()
        self._set_champion(version, [*history, version])
        self.client.delete_registered_model_alias(self.name, CHALLENGER)
        if force and not report.passed:
            self.client.set_model_version_tag(self.name, version, "validation_status", "forced")
        self._audit("forced" if force and not report.passed else "promoted", version=version,
                    previous=previous, actor=actor, reason=reason, gate_passed=report.passed)
        shadowing = shadow_config(self.registry)
        if shadowing is not None and shadowing.version == version:  # it serves all now
            stop_shadow(self.registry, actor=actor, reason=f"v{version} promoted")
        return PromotionResult(version, True, force and not report.passed, previous, report)

    def rollback(self, *, actor: str | None = None, reason: str | None = None) -> tuple[str, str]:
        """Move ``@champion`` back to the champion before the current one: (from, to)."""
        history = self.history()
        current = self._champion()
        if current is None or len(history) < 2:
            raise BastionError("there is no earlier champion to roll back to")
        if history[-1] != current:  # the alias was moved outside Bastion: trust the alias
            history.append(current)
        target = history[-2]
        self._set_champion(target, history[:-1])
        self._audit("rollback", version=target, previous=current, actor=actor, reason=reason)
        return current, target
