"""The cascade with the shipped first stage: its held-out agreement with the full model, and
over HTTP, a tenant with the cascade off gets the full model's scores for every item."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from bastion.core.cascade import Stage
from bastion.core.events import EventLog, text_digest
from bastion.core.policy import parse_policy
from bastion.core.textkey import text_key
from bastion.platform import deploy
from bastion.training.datasets import available_sources, load_starter_data
from bastion.training.starter import SHIPPED_DIR, split_masks
from tests._requires import dev_data

from .conftest import Served, Starter

BENIGN = ["see you at lunch tomorrow?", "thanks for the photos from the trip",
          "the meeting moved to three o'clock", "happy birthday to your sister!",
          "the train is running late again", "can you send me the report tonight?",
          "what a lovely day for a walk", "did you feed the cat this morning"]


@pytest.mark.model
def test_the_shipped_first_stage_meets_its_stated_tolerance(starter: Starter) -> None:
    dev_data("davidson-hate-offensive", "toxic-spans", "spamassassin")
    model = starter.model
    stage = model.first_stage
    assert stage is not None, f"{SHIPPED_DIR} has no first stage: run 'bastion starter cascade'"
    report = stage.report
    # what the artifact says it measured on the held-out split
    for key, m in report["per_key"].items():
        assert m["within_tolerance"] in (True, None), (key, m)
    for key, a in report["auroc"].items():
        if a["delta"] is not None:
            assert a["delta"] >= -0.01, (key, a)
    # and again on a fresh sample of that split, with the full model run here
    built = set(model.metadata["data"]["sources"])
    data = load_starter_data(sources=[n for n in available_sources() if n in built])
    test = np.flatnonzero(split_masks(data.groups)[2])
    pick = np.random.default_rng(7).choice(test, 400, replace=False)
    texts = [data.texts[i] for i in pick]
    _, full = model.score(texts)
    sure = stage.sure(stage.probabilities(texts))
    cols = [model.head_keys.index(k) for k in stage.keys]
    flagged = full[:, cols] >= stage.flag_levels
    missed = (flagged & sure[:, None]).sum(0)
    # 400 items: a handful flagged per head, so the bound is the tolerance's, at least one
    assert (missed <= np.maximum(1, 2 * stage.tolerance * flagged.sum(0))).all(), \
        dict(zip(stage.keys, missed.tolist(), strict=True))


@pytest.mark.ray
@pytest.mark.model
def test_a_tenant_with_the_cascade_off_gets_the_full_models_scores(
        served: Served, starter: Starter) -> None:
    if starter.model.first_stage is None:
        pytest.fail(f"{SHIPPED_DIR} has no first stage: run 'bastion starter cascade'")
    texts = BENIGN * 4
    t0 = time.time()
    data = json.loads(json.dumps(served.policy.model_dump(mode="json", exclude_none=True)))
    try:
        data["tenants"]["acme"]["cascade"] = False
        deploy(served.settings, parse_policy(data), served.keys, served.dashboard)
        off = served.moderate("acme", texts).json()["results"]
        data["tenants"]["acme"]["cascade"] = True
        deploy(served.settings, parse_policy(data), served.keys, served.dashboard)
        on = served.moderate("acme", texts).json()["results"]
    finally:
        deploy(served.settings, served.policy, served.keys, served.dashboard)
    _, full = starter.model.score(texts)
    # the Scorer's numerics are chosen by measuring at start (core.numerics): bf16 stays
    # within 2e-3 of fp32 here, int8 within a few hundredths (its quality against fp32 is
    # checked on AUROC by test_numerics_quality)
    scorer = httpx.get(f"{served.url}/readyz", timeout=30).json()["scorer"]
    chosen = (scorer.get("numerics") or {}).get("chosen")
    atol = 0.03 if chosen == "int8" else 2e-3
    for name in ("hate", "harassment", "spam"):
        j = starter.model.head_keys.index(name)
        got = np.array([r["scores"][name] for r in off])
        np.testing.assert_allclose(got, full[:, j], atol=atol, err_msg=f"numerics {chosen}")
    assert all(r["decision"] == "allow" for r in on)
    # the event log says which stage decided; first-stage items keep no embedding
    log = EventLog(served.settings.database_url)
    key = text_key(served.settings)
    digests = {text_digest(t, key) for t in BENIGN}
    events = []
    try:
        for _ in range(50):  # the writer flushes in the background
            events = [e for e in log.read(tenant="acme", since=t0) if e.text_sha256 in digests]
            if len(events) >= 2 * len(texts):
                break
            time.sleep(0.2)
    finally:
        log.close()
    assert len(events) == 2 * len(texts)
    stages = [next((r["stage"] for r in e.reasons if r.get("kind") == "cascade"), None)
              for e in events]
    # the tenant's own request with the cascade off records no stage; with it on, each item's
    assert stages.count(None) == len(texts)
    assert {s for s in stages if s is not None} <= {st.name for st in Stage}
    assert len([s for s in stages if s is not None]) == len(texts)
    for e, s in zip(events, stages, strict=True):
        assert (e.embedding is None) == (s == Stage.first.name)
