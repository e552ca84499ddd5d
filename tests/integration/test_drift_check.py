"""`bastion drift check`'s core on the real event log, champion and MLflow: a window of real
traffic is validated and tested, and its reports are kept on disk and in MLflow."""

from __future__ import annotations

import json
import time

import pytest

from bastion.core.events import EventLog
from bastion.drift.check import EXPERIMENT, check_tenants
from bastion.registry.store import ModelRegistry
from bastion.training.datasets import load_sms_spam

from .conftest import Served

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.model]

# the text check only: other tests of the shared platform send the studio tenant media too
TEXT = ("text",)


def test_a_window_of_real_traffic_is_checked_and_reported(served: Served) -> None:
    texts = [t for t in load_sms_spam(limit=400, seed=3).texts if t.strip()][:150]
    log = EventLog(served.settings.database_url)
    try:
        before = log.count("studio")
        for i in range(0, len(texts), 50):
            assert served.moderate("studio", texts[i:i + 50]).status_code == 200
        deadline = time.time() + 30
        while log.count("studio") < before + len(texts) and time.time() < deadline:
            time.sleep(0.2)
    finally:
        log.close()
    results = check_tenants(served.settings, served.policy, tenants=["studio"], hours=1,
                            min_items=100, modalities=TEXT)
    ((report, message),) = results
    assert report is not None, message
    assert report.n_window >= len(texts) and report.tests
    assert {t["name"] for t in report.tests} >= {"embedding_mmd", "score_ks:violence",
                                                  "flag_rate:sexual"}
    saved = sorted((served.settings.state_dir / "drift").glob("studio-*.json"))
    assert saved and json.loads(saved[-1].read_text())["tenant"] == "studio"
    registry = ModelRegistry(served.settings)
    runs = registry.client.search_runs([registry.experiment_id(EXPERIMENT)],
                                       "tags.`bastion.tenant` = 'studio'")
    stem = saved[-1].stem
    assert runs and {a.path for a in registry.client.list_artifacts(
        runs[0].info.run_id, "drift")} >= {f"drift/{stem}.json", f"drift/{stem}.html",
                                           f"drift/{stem}-scores.png",
                                           f"drift/{stem}-flag_rates.png"}
    assert (saved[-1].parent / f"{stem}-scores.png").read_bytes()[:4] == b"\x89PNG"
    # the expectation suite is kept with the model version and reused by the next check
    from bastion.registry.store import CHAMPION

    champion = registry.by_alias(CHAMPION)
    suites = list((served.settings.state_dir / "drift" / "suites").glob(
        f"v{champion.version}-studio-*.json"))
    assert len(suites) == 1
    tag = registry.client.get_model_version(registry.name, champion.version).tags
    assert tag["bastion.drift_suite.studio"] == report.validation["suite_version"]
    assert f"drift/{suites[0].name}" in {
        a.path for a in registry.client.list_artifacts(champion.run_id, "drift")}
    ((again, _m),) = check_tenants(served.settings, served.policy, tenants=["studio"],
                                   hours=1, min_items=100, log_mlflow=False, modalities=TEXT)
    assert again is not None
    assert again.validation["suite_version"] == report.validation["suite_version"]
    # too little traffic is reported, not checked
    ((none, why),) = check_tenants(served.settings, served.policy, tenants=["acme"],
                                   hours=1e-6, min_items=100, modalities=TEXT)
    assert none is None and "not checked" in why
