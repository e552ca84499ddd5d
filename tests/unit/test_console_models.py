"""The console's Models and Drift routes (review/console_models.py) on a plain FastAPI app with a
real MLflow registry (SQLite, in the test's directory), a real review queue and audit log; the
Ray Jobs client is the one thing faked (the browser test submits a real job to a real cluster).
What is checked: only ML ops see the screens and only a key for every tenant changes the
champion; promote submits exactly the CLI's ``bastion promote``; rollback moves the alias and
is audited; drift reports come with their plots and stay within the reviewer's tenants."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bastion.core.http import install_error_handlers
from bastion.core.settings import Settings
from bastion.core.store.tables import drift_triggers
from bastion.registry.lifecycle import Lifecycle
from bastion.registry.store import DRIFT_EXPERIMENT, ModelRegistry
from bastion.review.console import include_console
from bastion.review.console_models import include_models
from bastion.review.queue import ReviewQueue
from bastion.review.routes import include_review
from bastion.review.service import ReviewService
from tests.unit.test_console import policy
from tests.unit.test_drift_triggers import FakeJob, FakeJobs
from tests.unit.test_review_routes import REVIEWERS, FakeAccess, as_

REVIEWERS.setdefault("rev_ops", ("ops", "mlops", ["acme"]))
REVIEWERS.setdefault("rev_root", ("root", "mlops", ["acme", "studio"]))
PNG = base64.b64decode(  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.settings = Settings(state_dir=tmp_path)
        self.registry = ModelRegistry(self.settings)
        self.client_ml = self.registry.client
        self.policy = policy()
        self.url = self.settings.database_url
        self.service = ReviewService(ReviewQueue(self.url), lambda: self.policy)
        self.jobs = FakeJobs()
        app = FastAPI()
        install_error_handlers(app)
        include_review(app, FakeAccess(self.service))
        include_console(app)
        include_models(app, self.settings, jobs=lambda: self.jobs)
        self.client = TestClient(app)

    def version(self) -> str:
        run_id = self.registry.start_run("candidate", tags={"bastion.reason": "test: why"})
        try:
            self.client_ml.create_registered_model(self.registry.name)
        except Exception:  # noqa: BLE001 - exists already
            pass
        mv = self.client_ml.create_model_version(self.registry.name,
                                                 source=f"runs:/{run_id}/model", run_id=run_id)
        return str(mv.version)

    def drift_run(self, tenant: str, drift: bool) -> str:
        run = self.client_ml.create_run(self.registry.experiment_id(DRIFT_EXPERIMENT),
                                        tags={"bastion.tenant": tenant,
                                              "bastion.model_version": "1",
                                              "bastion.drift": str(drift).lower()})
        rid = run.info.run_id
        for k, v in {"drift": float(drift), "n_window": 300.0, "validation_failures": 1.0,
                     "performance_drop": 0.0}.items():
            self.client_ml.log_metric(rid, k, v)
        report = {"tenant": tenant, "n_window": 300, "drift": drift, "failed": ["mmd"],
                  "tests": [{"name": "mmd", "statistic": 0.2, "p_value": 0.001,
                             "threshold": 0.01, "drift": True, "counts": True}],
                  "validation": {"failures": [{"expectation": "values_between",
                                               "column": "len", "unexpected_count": 3}]},
                  "model_version": "1", "created_at": 1.0}
        self.client_ml.log_dict(rid, report, f"drift/{tenant}-20261202T000000.json")
        self.client_ml.log_text(rid, "<html>", f"drift/{tenant}-20261202T000000.html")
        d = Path(self.settings.state_dir) / "png"
        d.mkdir(exist_ok=True)
        (d / f"{tenant}-20261202T000000-scores.png").write_bytes(PNG)
        self.client_ml.log_artifact(rid, str(d / f"{tenant}-20261202T000000-scores.png"),
                                    "drift")
        return str(rid)


@pytest.fixture()
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    with s.client:
        yield s


ROUTES = [("get", "/v1/console/models", None), ("get", "/v1/console/models/1", None),
          ("post", "/v1/console/models/1/promote", {"reason": "better"}),
          ("post", "/v1/console/models/rollback", {"reason": "worse"}),
          ("get", "/v1/console/drift", None), ("get", "/v1/console/drift/" + "0" * 32, None),
          ("get", "/v1/console/jobs", None),
          ("post", "/v1/console/categories", {"tenant": "acme", "name": "scam",
                                              "description": "scams", "examples": ["x"] * 10})]


def test_moderators_see_no_model_or_drift_route(setup: Setup) -> None:
    for method, path, body in ROUTES:
        r = setup.client.request(method, path, json=body, headers=as_("rev_ann"))
        assert r.status_code == 403, (path, r.text)
        assert "for ML ops" in r.json()["error"]
        assert setup.client.request(method, path, json=body).status_code == 401
    assert setup.jobs.submitted == []


def test_versions_history_and_gate_report_for_ml_ops(setup: Setup) -> None:
    v1, v2 = setup.version(), setup.version()
    lc = Lifecycle(setup.settings, setup.policy)
    lc._set_champion(v1, [v1])
    run_id = setup.registry.get(v2).run_id
    assert run_id
    setup.client_ml.log_dict(run_id, {"candidate": v2, "champion": v1, "passed": False,
                                      "verdict": "FAILED", "checks": []},
                             "gate/report-20261201T000000Z.json")
    setup.client_ml.log_dict(run_id, {"candidate": v2, "champion": v1, "passed": True,
                                      "verdict": "PASSED", "checks": []},
                             "gate/report-20261202T000000Z.json")
    d = setup.client.get("/v1/console/models", headers=as_("rev_ops")).json()
    assert d["champion"] == v1 and d["history"] == [v1]
    assert [v["version"] for v in d["versions"]] == [v2, v1]  # newest first
    assert d["can_change_champion"] is False  # ops covers acme only, the policy has studio
    assert setup.client.get("/v1/console/models", headers=as_("rev_root")).json()[
        "can_change_champion"] is True
    g = setup.client.get(f"/v1/console/models/{v2}", headers=as_("rev_ops")).json()
    assert g["report"]["verdict"] == "PASSED" and g["report_at"] == "20261202T000000Z"
    assert g["reason"] == "test: why"
    assert setup.client.get(f"/v1/console/models/{v1}", headers=as_("rev_ops")).json()[
        "report"] is None
    r = setup.client.get("/v1/console/models/99", headers=as_("rev_ops"))
    assert r.status_code == 404 and "no version" in r.json()["error"]
    assert setup.client.get("/v1/console/models/x;1", headers=as_("rev_ops")).status_code == 422


def test_promote_submits_the_clis_gate_as_a_ray_job_for_an_all_tenant_key(setup: Setup) -> None:
    v1, v2 = setup.version(), setup.version()
    Lifecycle(setup.settings, setup.policy)._set_champion(v1, [v1])
    body = {"reason": "fewer false blocks\non acme"}
    r = setup.client.post(f"/v1/console/models/{v2}/promote", json=body, headers=as_("rev_ops"))
    assert r.status_code == 403 and "does not cover studio" in r.json()["error"]
    r = setup.client.post(f"/v1/console/models/{v2}/promote", json=body, headers=as_("rev_root"))
    assert r.status_code == 202, r.text
    job = setup.jobs.submitted[0]
    state = setup.settings.state_dir
    assert f" promote --state-dir {state} {v2} --actor root " in job["entrypoint"]
    assert "--reason 'fewer false blocks on acme'" in job["entrypoint"]
    assert " --force" not in job["entrypoint"]  # the console never forces past the gate
    assert job["metadata"] == {"bastion": "promote", "version": v2, "actor": "root",
                               "reason": "fewer false blocks on acme"}
    assert job["runtime_env"]["env_vars"]["RAY_USAGE_STATS_ENABLED"] == "0"
    # one promotion at a time; the champion cannot be promoted; unknown versions are 404
    again = setup.client.post(f"/v1/console/models/{v2}/promote", json=body,
                              headers=as_("rev_root"))
    assert again.status_code == 409 and "still running" in again.json()["error"]
    setup.jobs.jobs[0].status = "FAILED"
    r = setup.client.post(f"/v1/console/models/{v1}/promote", json=body, headers=as_("rev_root"))
    assert r.status_code == 409 and "already @champion" in r.json()["error"]
    assert setup.client.post("/v1/console/models/42/promote", json=body,
                             headers=as_("rev_root")).status_code == 404
    assert setup.client.post(f"/v1/console/models/{v2}/promote", json={"reason": ""},
                             headers=as_("rev_root")).status_code == 422
    jobs = setup.client.get("/v1/console/jobs", headers=as_("rev_ops")).json()
    assert [(j["kind"], j["status"], j["version"], j["actor"]) for j in jobs["jobs"]] == [
        ("promote", "FAILED", v2, "root")]
    audit = setup.client.get("/v1/console/audit", headers=as_("rev_root")).json()["entries"]
    assert [(e["actor"], e["action"], e["target"]) for e in audit] == [("root", "promote", v2)]


def test_rollback_moves_the_champion_back_and_is_audited_twice(setup: Setup) -> None:
    v1, v2 = setup.version(), setup.version()
    lc = Lifecycle(setup.settings, setup.policy)
    lc._set_champion(v1, [v1])
    r = setup.client.post("/v1/console/models/rollback", json={"reason": "nothing before"},
                          headers=as_("rev_root"))
    assert r.status_code == 409 and "no earlier champion" in r.json()["error"]
    lc._set_champion(v2, [v1, v2])
    r = setup.client.post("/v1/console/models/rollback", json={"reason": "v2 blocks too much"},
                          headers=as_("rev_root"))
    assert r.status_code == 200, r.text
    assert (r.json()["from"], r.json()["to"]) == (v2, v1)
    assert setup.registry.by_alias("champion").version == v1
    trail = setup.client.get("/v1/console/models", headers=as_("rev_root")).json()["audit"]
    assert trail[0]["action"] == "rollback" and trail[0]["actor"] == "root"
    assert trail[0]["reason"] == "v2 blocks too much"
    audit = setup.client.get("/v1/console/audit", headers=as_("rev_root")).json()["entries"]
    assert [(e["action"], e["target"]) for e in audit] == [("rollback", v1)]


def test_drift_reports_come_with_plots_and_stay_in_the_reviewers_tenants(setup: Setup) -> None:
    assert setup.client.get("/v1/console/drift", headers=as_("rev_ops")).json()["runs"] == []
    acme = setup.drift_run("acme", drift=True)
    studio = setup.drift_run("studio", drift=False)
    runs = setup.client.get("/v1/console/drift", headers=as_("rev_ops")).json()["runs"]
    assert [(r["run_id"], r["drift"], r["n_window"], r["validation_failures"])
            for r in runs] == [(acme, True, 300, 1)]
    assert {r["tenant"] for r in setup.client.get(
        "/v1/console/drift", headers=as_("rev_root")).json()["runs"]} == {"acme", "studio"}
    d = setup.client.get(f"/v1/console/drift/{acme}", headers=as_("rev_ops")).json()
    assert d["report"]["failed"] == ["mmd"] and list(d["plots"]) == ["scores"]
    assert base64.b64decode(d["plots"]["scores"].removeprefix("data:image/png;base64,")) == PNG
    r = setup.client.get(f"/v1/console/drift/{studio}", headers=as_("rev_ops"))
    assert r.status_code == 404 and "in your tenants" in r.json()["error"]


def test_jobs_show_the_trigger_record_and_say_when_ray_does_not_answer(setup: Setup) -> None:
    with setup.service.queue.engine.begin() as conn:
        conn.execute(drift_triggers.insert().values(
            at=5.0, action="submitted", rule="drift-with-labels",
            reasons=json.dumps(["drift in acme"]), job_id="bastion-retrain-1",
            model_version="1", message="submitted"))
    setup.jobs.jobs.append(FakeJob("bastion-retrain-1", "RUNNING",
                                   {"bastion": "retrain", "rule": "drift-with-labels"}))
    setup.jobs.jobs.append(FakeJob("someone-elses", "RUNNING", {}))
    d = setup.client.get("/v1/console/jobs", headers=as_("rev_ops")).json()
    assert [(j["job_id"], j["kind"], j["rule"]) for j in d["jobs"]] == [
        ("bastion-retrain-1", "retrain", "drift-with-labels")]
    assert d["triggers"][0]["reasons"] == ["drift in acme"] and d["jobs_error"] is None

    def down() -> Any:
        raise ConnectionError("dashboard refused")

    setup.client.app.state.console_models.jobs = down  # type: ignore[attr-defined]
    d = setup.client.get("/v1/console/jobs", headers=as_("rev_ops")).json()
    assert d["jobs"] == [] and "dashboard refused" in d["jobs_error"]
    assert d["triggers"]  # the record still shows


SCAMS = [f"send {n} bitcoin to my wallet and get {2 * n} back" for n in range(1, 11)]


def test_a_new_category_submits_the_clis_category_add_as_a_ray_job(setup: Setup) -> None:
    body = {"tenant": "acme", "name": "crypto_scam", "description": "crypto\ngiveaway scams",
            "examples": [*SCAMS, SCAMS[0], "  "], "target_precision": 0.95}
    r = setup.client.post("/v1/console/categories", json=body, headers=as_("rev_ops"))
    assert r.status_code == 403 and "does not cover studio" in r.json()["error"]
    r = setup.client.post("/v1/console/categories", json=body, headers=as_("rev_root"))
    assert r.status_code == 202, r.text
    assert r.json()["examples"] == 10  # the repeated and the blank one are not counted
    (job,) = setup.jobs.submitted
    state = setup.settings.state_dir
    assert (f" category --state-dir {state} add acme crypto_scam --description "
            "'crypto giveaway scams' --examples ") in job["entrypoint"]
    assert "--target-precision 0.95 --actor root" in job["entrypoint"]
    assert job["metadata"]["bastion"] == "category"
    assert job["metadata"]["category"] == "acme/crypto_scam"
    (examples,) = (state / "categories").glob("acme-crypto_scam-*.txt")
    assert examples.read_text().splitlines() == SCAMS
    assert str(examples) in job["entrypoint"]
    # one at a time
    again = setup.client.post("/v1/console/categories", json=body, headers=as_("rev_root"))
    assert again.status_code == 409 and "still running" in again.json()["error"]
    jobs = setup.client.get("/v1/console/jobs", headers=as_("rev_root")).json()["jobs"]
    assert jobs[0]["kind"] == "category" and jobs[0]["category"] == "acme/crypto_scam"


@pytest.mark.parametrize(("change", "status", "says"), [
    ({"examples": SCAMS[:9]}, 422, "at least 10"),
    ({"tenant": "nobody"}, 422, "unknown tenant 'nobody'"),
    ({"name": "spam"}, 409, "already has a category 'spam'"),
    ({"name": "Not A Slug"}, 422, "name"),
])
def test_a_new_category_s_bad_input_is_a_clear_error(setup: Setup, change: dict[str, Any],
                                                    status: int, says: str) -> None:
    body = {"tenant": "acme", "name": "crypto_scam", "description": "scams",
            "examples": SCAMS, **change}
    r = setup.client.post("/v1/console/categories", json=body, headers=as_("rev_root"))
    assert r.status_code == status and says in r.text, r.text
    assert setup.jobs.submitted == []


def test_the_console_asks_for_as_many_examples_as_the_cli() -> None:
    from bastion.review.console_models import MIN_EXAMPLES
    from bastion.training.category import MIN_POSITIVES

    assert MIN_EXAMPLES == MIN_POSITIVES


def test_jobs_gate_on_and_edit_the_platform_s_policy_file(tmp_path: Path) -> None:
    from bastion.core.jobs import submit

    jobs = FakeJobs()
    submit(jobs, Settings(state_dir=tmp_path), "promote", "promote", "2")
    assert "BASTION_POLICY_FILE" not in jobs.submitted[0]["runtime_env"]["env_vars"]
    mine = tmp_path / "mine.yaml"
    submit(jobs, Settings(state_dir=tmp_path, policy_file=mine), "promote", "promote", "2")
    assert jobs.submitted[1]["runtime_env"]["env_vars"]["BASTION_POLICY_FILE"] == str(mine)
