"""Trigger rules, dedupe and cooldown, and the monitor's schedule. The Ray Jobs client is a
fake here (unit tests); tests/integration/test_triggers.py submits a real job."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bastion.core.errors import PolicyError
from bastion.core.policy import PolicySet, parse_policy
from bastion.core.settings import load_settings
from bastion.drift.triggers import (
    JOB_KIND,
    Signals,
    TriggerLog,
    fired,
    maybe_retrain,
)

TENANTS = {"acme": {"categories": {"hate": {"block_threshold": 0.8}}}}


def policy(rules: list[dict[str, Any]], cooldown: float = 6.0, **extra: Any) -> PolicySet:
    return parse_policy({"tenants": TENANTS, **extra,
                         "retraining": {"triggers": {"cooldown_hours": cooldown,
                                                     "rules": rules}}})


# -- rules ---------------------------------------------------------------------------------------


def test_a_rule_fires_only_when_all_its_conditions_hold() -> None:
    rules = policy([{"name": "drift-labels", "drift": True, "new_labels": 100},
                    {"name": "weekly", "every_hours": 168}]).retraining.triggers.rules
    assert fired(rules, Signals(drifted=["acme"], new_labels=99)) == []
    hits = fired(rules, Signals(drifted=["acme"], new_labels=100))
    assert [h[0] for h in hits] == ["drift-labels"]
    assert hits[0][1] == ["drift in acme", "100 new label(s) (rule: 100)"]
    assert [h[0] for h in fired(rules, Signals(champion_age_hours=200.0))] == ["weekly"]
    assert fired(rules, Signals(champion_age_hours=None)) == []


def test_validation_and_performance_conditions() -> None:
    rules = policy([{"name": "bad-data", "validation_failures": 3},
                    {"name": "precision", "performance": True}]).retraining.triggers.rules
    assert fired(rules, Signals(validation_failures={"acme": 2})) == []
    hits = fired(rules, Signals(validation_failures={"acme": 3},
                                precision_drops=["acme/hate"]))
    assert [h[0] for h in hits] == ["bad-data", "precision"]
    assert "acme (3 expectation(s))" in hits[0][1][0]
    assert "acme/hate" in hits[1][1][0]


def test_a_rule_without_conditions_is_a_policy_error_that_says_what_to_set() -> None:
    with pytest.raises(PolicyError, match="sets no condition"):
        policy([{"name": "always"}])
    with pytest.raises(PolicyError, match="cooldown_hours"):
        policy([{"name": "x", "new_labels": 1}], cooldown=-1)


# -- dedupe and cooldown ---------------------------------------------------------------------


@dataclass
class FakeJob:
    """A job as ``JobSubmissionClient.list_jobs`` describes it (the fields Bastion reads)."""

    submission_id: str
    status: str
    metadata: dict[str, str]
    job_id: str | None = None
    message: str | None = None
    start_time: int | None = 1_000_000  # ms
    end_time: int | None = None


@dataclass
class FakeJobs:
    """The part of ray.job_submission.JobSubmissionClient that Bastion uses (maybe_retrain,
    the console's jobs routes)."""

    jobs: list[FakeJob] = field(default_factory=list)
    fail: bool = False
    submitted: list[dict[str, Any]] = field(default_factory=list)

    def list_jobs(self) -> list[FakeJob]:
        return list(self.jobs)

    def submit_job(self, **kw: Any) -> str:
        if self.fail:
            raise ConnectionError("dashboard unreachable")
        self.submitted.append(kw)
        self.jobs.append(FakeJob(kw["submission_id"], "PENDING", kw["metadata"]))
        return str(kw["submission_id"])

    def finish_all(self) -> None:
        for j in self.jobs:
            j.status = "SUCCEEDED"


@pytest.fixture
def settings(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Settings on the test's database; the CLI (a fresh load_settings) finds it in the
    environment, as a pod does."""
    monkeypatch.setenv("BASTION_DATABASE_URL", db_url)
    return load_settings(tmp_path / "state")


def test_one_drift_starts_one_job_then_running_then_cooldown_then_again(settings: Any) -> None:
    pol = policy([{"name": "labels", "new_labels": 10}], cooldown=6)
    sig = Signals(new_labels=50, model_version="3")
    jobs = FakeJobs()
    t0 = 1_000_000.0
    first = maybe_retrain(settings, pol, sig, "127.0.0.1:8265", now=t0, client=jobs)
    assert first.action == "submitted" and first.job_id
    sub = jobs.submitted[0]
    assert sub["metadata"] == {**JOB_KIND, "rule": "labels"}
    assert " retrain --state-dir " in sub["entrypoint"]
    assert "--reason 'trigger labels: 50 new label(s) (rule: 10)'" in sub["entrypoint"]
    assert sub["runtime_env"]["env_vars"]["RAY_USAGE_STATS_ENABLED"] == "0"

    assert maybe_retrain(settings, pol, sig, "x", now=t0 + 60, client=jobs).action == "running"
    jobs.finish_all()
    cool = maybe_retrain(settings, pol, sig, "x", now=t0 + 3600, client=jobs)
    assert cool.action == "cooldown" and "5.00 h left" in cool.message
    again = maybe_retrain(settings, pol, sig, "x", now=t0 + 6 * 3600 + 1, client=jobs)
    assert again.action == "submitted"
    assert len(jobs.submitted) == 2

    log = TriggerLog(settings.database_url)
    try:
        rows = log.recent()
    finally:
        log.close()
    assert [r["action"] for r in rows][::-1] == ["submitted", "running", "cooldown",
                                                  "submitted"]
    assert all(r["model_version"] == "3" and r["rule"] == "labels" for r in rows)


def test_nothing_fires_nothing_is_recorded_and_a_failed_submission_is_retried(
        settings: Any) -> None:
    pol = policy([{"name": "labels", "new_labels": 10}])
    jobs = FakeJobs(fail=True)
    assert maybe_retrain(settings, pol, Signals(new_labels=1), "x", client=jobs).action == "none"
    log = TriggerLog(settings.database_url)
    assert log.recent() == []
    log.close()
    failed = maybe_retrain(settings, pol, Signals(new_labels=20), "x", client=jobs)
    assert failed.action == "failed" and "dashboard unreachable" in failed.message
    jobs.fail = False  # a failed submission starts no cooldown
    assert maybe_retrain(settings, pol, Signals(new_labels=20), "x",
                         client=jobs).action == "submitted"


def test_two_monitors_at_once_submit_one_job(settings: Any) -> None:
    pol = policy([{"name": "labels", "new_labels": 10}])
    jobs = FakeJobs()
    slow_submit = jobs.submit_job

    def submit(**kw: Any) -> str:
        time.sleep(0.3)  # the other monitor arrives while this one submits
        return slow_submit(**kw)

    jobs.submit_job = submit  # type: ignore[method-assign]
    outcomes: list[str] = []
    threads = [threading.Thread(target=lambda: outcomes.append(maybe_retrain(
        settings, pol, Signals(new_labels=20), "x", client=jobs).action)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["running", "submitted"]
    assert len(jobs.submitted) == 1


# -- the schedule inside 'bastion up' -------------------------------------------------------------


def test_the_schedule_runs_passes_at_the_policy_interval_and_survives_a_failure(
        settings: Any) -> None:
    from bastion.platform import DriftSchedule

    calls: list[float] = []

    def run_pass(_settings: Any, _policy: Any, **_kw: Any) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("MLflow is down")

    said: list[str] = []
    pol = {"p": parse_policy({"tenants": TENANTS, "drift": {"every_minutes": 0.005}})}
    sched = DriftSchedule(settings, lambda: pol["p"], "x", said.append, run_pass=run_pass,
                          tick_s=0.05)
    sched.start()
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    pol["p"] = parse_policy({"tenants": TENANTS, "drift": {"every_minutes": 0}})  # turned off
    time.sleep(0.2)
    n = len(calls)
    time.sleep(0.6)
    sched.stop()
    sched.join(5)
    assert n >= 3 and len(calls) == n
    assert all(b - a >= 0.25 for a, b in zip(calls, calls[1:], strict=False))
    assert any("MLflow is down" in m and m.startswith("Drift monitor:") for m in said)


def test_the_triggers_command_lists_what_fired_and_why(settings: Any) -> None:
    from click.testing import CliRunner

    from bastion.cli import cli

    state = str(settings.state_dir)
    empty = CliRunner().invoke(cli, ["drift", "triggers", "--state-dir", state])
    assert empty.exit_code == 0 and "No trigger has fired yet" in empty.output
    pol = policy([{"name": "labels", "new_labels": 10}])
    maybe_retrain(settings, pol, Signals(new_labels=20), "x", client=FakeJobs())
    maybe_retrain(settings, pol, Signals(new_labels=20), "x", client=FakeJobs(
        jobs=[FakeJob("bastion-retrain-1", "RUNNING", dict(JOB_KIND))]))
    out = CliRunner().invoke(cli, ["drift", "triggers", "--state-dir", state])
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert "running" in lines[0] and "still running" in lines[0]
    assert "submitted" in lines[1] and "20 new label(s)" in lines[1]
    js = CliRunner().invoke(cli, ["drift", "triggers", "--state-dir", state, "--json"])
    assert [r["action"] for r in json.loads(js.output)] == ["running", "submitted"]
