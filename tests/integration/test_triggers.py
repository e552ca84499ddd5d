"""Retraining triggers on the real components: a policy rule fires on labels in the SQLite label
store, the job is submitted through the Ray Jobs API to the session's Ray cluster, runs
``bastion retrain`` (the Kubernetes RayJob's entry point) and registers a version in MLflow that
carries the trigger's reason; within the cooldown no second job starts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bastion.core.policy import load_policy
from bastion.core.runtime import dashboard_http
from bastion.drift.triggers import (
    JOB_KIND,
    TriggerLog,
    gather_signals,
    maybe_retrain,
)
from bastion.registry.store import ModelRegistry

from .conftest import POLICY, Served
from .test_retrain import davidson_label_lines, import_labels

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.model]

RULES = """
retraining:
  seed_data: false       # the job trains on the human labels only: a small, quick run
  auto_promote: false    # the session's champion stays the starter model
  triggers:
    cooldown_hours: 1
    rules:
      - {name: drift-with-labels, drift: true, new_labels: 100}
      - {name: label-volume, new_labels: 100}
"""


def _bastion_jobs(client: object) -> list[object]:
    return [j for j in client.list_jobs()  # type: ignore[attr-defined]
            if (j.metadata or {}).get("bastion") == JOB_KIND["bastion"]]


def test_a_trigger_starts_one_real_retraining_job_not_two_within_the_cooldown(
        served: Served, tmp_path: Path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    settings = served.settings
    path = settings.resolved_policy_file
    before = path.read_text() if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(POLICY.read_text() + RULES)  # what the job's 'bastion retrain' reads
    try:
        policy = load_policy(path)
        import_labels(settings, tmp_path, davidson_label_lines(600, 120))
        signals = gather_signals(settings, [])
        assert signals.new_labels >= 100 and not signals.drifted

        client = JobSubmissionClient(dashboard_http(served.dashboard))
        assert not _bastion_jobs(client)
        first = maybe_retrain(settings, policy, signals, served.dashboard)
        assert first.action == "submitted", first.message
        assert first.rule == "label-volume"  # drift-with-labels needs drift too
        second = maybe_retrain(settings, policy, signals, served.dashboard)
        assert second.action in ("running", "cooldown"), second.message

        deadline = time.monotonic() + 900
        status = client.get_job_status(first.job_id)
        while status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            assert time.monotonic() < deadline, "the retraining job did not finish in 15 min"
            time.sleep(2)
            status = client.get_job_status(first.job_id)
        logs = client.get_job_logs(first.job_id)
        assert status == JobStatus.SUCCEEDED, logs[-4000:]

        third = maybe_retrain(settings, policy, signals, served.dashboard)
        assert third.action == "cooldown", third.message
        assert len(_bastion_jobs(client)) == 1

        # The reason went with the job to the MLflow run and the registered version.
        registry = ModelRegistry(settings)
        tagged = [v for v in registry.client.search_model_versions(f"name='{registry.name}'")
                  if (v.tags or {}).get("bastion.reason", "").startswith("trigger label-volume")]
        assert len(tagged) == 1, logs[-4000:]
        assert "new label(s)" in tagged[0].tags["bastion.reason"]

        log = TriggerLog(settings.database_url)
        try:
            actions = [r["action"] for r in log.recent()][::-1]
        finally:
            log.close()
        assert actions[0] == "submitted" and actions[-1] == "cooldown"
        assert actions.count("submitted") == 1
    finally:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(before)
