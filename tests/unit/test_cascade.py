"""The cascade: the first stage's routing, calibration against the full model, the artifact,
the per-tenant switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bastion.core.cascade import (
    FIRST_STAGE_FILE,
    FirstStage,
    HashedNgrams,
    Stage,
    calibrate,
    calibrate_thresholds,
    cascade_fits,
    cascade_refused,
    cascade_scores,
    drift_sample,
    fit_first_stage,
    measure_agreement,
    stage_reason,
)
from bastion.core.decision import resolve_policy
from bastion.core.errors import ModelError
from bastion.core.model import HeadSpec, LinearHeads, ModerationModel
from bastion.core.policy import parse_policy
from tests.unit.test_model import FakeEncoder

BENIGN = ["see you at lunch", "the meeting moved to three", "thanks for the photos",
          "happy birthday to your sister", "the train is late again", "lovely weather today"]
TOXIC = ["you are a worthless idiot", "shut up idiot", "worthless trash person",
         "idiot idiot idiot", "you worthless loser", "what an idiot you are"]


def _stage() -> FirstStage:
    texts = BENIGN * 5 + TOXIC * 5
    y = np.array([[0.0]] * 30 + [[1.0]] * 30, np.float32)
    return fit_first_stage(texts, y, np.ones_like(y), ["harassment"],
                           HashedNgrams(n_features=1 << 12))


def test_calibration_bounds_the_flagged_items_the_first_stage_allows() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((2000, 2)).astype(np.float32)
    full = np.clip(probs + rng.normal(0, 0.2, probs.shape), 0, 1).astype(np.float32)
    levels = np.array([0.6, 0.8], np.float32)
    for tol in (0.0, 0.005, 0.05):
        t = calibrate_thresholds(probs, full, levels, tol)
        for j in range(2):
            flagged = full[:, j] >= levels[j]
            allowed = (flagged & (probs[:, j] < t[j])).sum()
            assert allowed <= np.floor(tol * flagged.sum())
    # a key the full model never flags: nothing is sure
    assert calibrate_thresholds(probs, np.zeros_like(full), levels)[0] == 0.0


def test_routing_allows_only_what_every_key_is_sure_of() -> None:
    stage = _stage()
    probs = stage.probabilities(BENIGN + TOXIC)
    full = np.array([[0.05]] * 6 + [[0.9]] * 6, np.float32)
    calibrate(stage, probs, full, np.array([0.5], np.float32), tolerance=0.0)
    stage.audit_share = 0.0
    routing = stage.route(BENIGN + TOXIC)
    assert set(routing.stage[:6].tolist()) <= {Stage.first, Stage.second}
    assert (routing.stage[6:] == Stage.second).all()  # a flagged item never stops at stage 1
    assert (routing.stage == Stage.first).any()
    # what a stage-1 item gets stays below the flag level: the decision step allows it
    assert (routing.scores[routing.stage == Stage.first] < 0.5).all()
    report = measure_agreement(stage, probs, full)
    assert report["per_key"]["harassment"]["missed"] == 0
    assert report["decision_agreement"] == 1.0


def test_the_audit_share_goes_to_the_full_model_whatever_stage_1_says() -> None:
    stage = _stage()
    probs = stage.probabilities(BENIGN)
    calibrate(stage, probs, np.full((6, 1), 0.9, np.float32), np.array([0.95], np.float32))
    stage.thresholds = np.array([1.0], np.float32)  # sure of everything
    stage.audit_share = 1.0
    assert (stage.route(BENIGN).stage == Stage.audit).all()
    stage.audit_share = 0.0
    assert (stage.route(BENIGN).stage == Stage.first).all()


def test_drift_reads_embeddings_of_the_audit_share_and_of_calls_without_cascade() -> None:
    assert drift_sample([{"kind": "model"}])
    assert drift_sample([stage_reason(Stage.audit)])
    assert not drift_sample([stage_reason(Stage.second)])
    assert not drift_sample([stage_reason(Stage.first)])


def test_cascade_scores_are_the_full_models_where_stage_1_is_unsure() -> None:
    stage = _stage()
    probs = stage.probabilities(BENIGN + TOXIC)
    full = np.array([[0.05]] * 6 + [[0.9]] * 6, np.float32)
    calibrate(stage, probs, full, np.array([0.5], np.float32), tolerance=0.0)
    out = cascade_scores(stage, probs, full)
    unsure = ~stage.sure(probs)
    np.testing.assert_array_equal(out[unsure], full[unsure])


def _model(stage: FirstStage | None) -> ModerationModel:
    heads = LinearHeads([HeadSpec("harassment")], np.ones((4, 1), np.float32),
                        np.array([-30.0], np.float32))
    return ModerationModel(FakeEncoder(), heads, {"categories": ["harassment"]},
                           first_stage=stage)


def test_the_model_artifact_keeps_the_first_stage(tmp_path: Path) -> None:
    stage = _stage()
    texts = BENIGN + TOXIC
    calibrate(stage, stage.probabilities(texts), np.array([[0.0]] * 6 + [[0.9]] * 6,
              np.float32), np.array([0.5], np.float32), tolerance=0.0)
    _model(stage).save(tmp_path / "m")
    assert (tmp_path / "m" / FIRST_STAGE_FILE).is_file()
    loaded = ModerationModel.load(tmp_path / "m", encoder=FakeEncoder())
    assert loaded.first_stage is not None
    assert loaded.metadata["cascade"]["thresholds"]["harassment"] == pytest.approx(
        float(stage.thresholds[0]), abs=1e-6)
    np.testing.assert_allclose(loaded.first_stage.probabilities(texts),
                               stage.probabilities(texts), atol=2e-3)  # float16 weights
    # a model without one keeps working: every item through the full model
    _model(None).save(tmp_path / "plain")
    plain = ModerationModel.load(tmp_path / "plain", encoder=FakeEncoder())
    assert plain.first_stage is None and plain.route(texts) is None
    _, scores, stages = plain.score_cascade(texts)
    assert (stages == Stage.full).all() and scores.shape == (12, 1)


def test_score_cascade_merges_both_stages_in_input_order() -> None:
    stage = _stage()
    texts = BENIGN + TOXIC
    calibrate(stage, stage.probabilities(texts), np.array([[0.0]] * 6 + [[0.9]] * 6,
              np.float32), np.array([0.5], np.float32), tolerance=0.0)
    stage.audit_share = 0.0
    model = _model(stage)
    emb, scores, stages = model.score_cascade(texts)
    _, full = model.score(texts)
    rest = stages != Stage.first
    assert len(emb) == rest.sum()
    np.testing.assert_allclose(scores[rest], full[rest], rtol=1e-6)


def test_a_first_stage_must_score_every_head() -> None:
    heads = LinearHeads([HeadSpec("harassment"), HeadSpec("spam")], np.ones((4, 2)),
                        np.zeros(2))
    with pytest.raises(ModelError, match=r"does not score head\(s\) \['spam'\]"):
        ModerationModel(FakeEncoder(), heads, {}, first_stage=_stage())


def _policy(**tenant: object) -> dict[str, object]:
    return {"tenants": {"t": {"categories": {"harassment": {"review_threshold": 0.6,
                                                            "block_threshold": 0.9}},
                              **tenant}}}


def test_the_per_tenant_switch_and_the_flag_level_check() -> None:
    meta = {"version": "1", "cascade": {"flag_levels": {"harassment": 0.5}}}
    on = resolve_policy(parse_policy(_policy(cascade=True), "p"), ["harassment"],
                        meta)["t"]  # type: ignore[arg-type]
    assert on.cascade_off is None
    default = resolve_policy(parse_policy(_policy(), "p"), ["harassment"], meta)["t"]  # type: ignore[arg-type]
    assert default.cascade_off == "switched off in the policy (cascade: false)"  # off by default
    off = resolve_policy(parse_policy(_policy(cascade=False), "p"), ["harassment"],
                         meta)["t"]  # type: ignore[arg-type]
    assert off.cascade_off == "switched off in the policy (cascade: false)"
    none = resolve_policy(parse_policy(_policy(cascade=True), "p"), ["harassment"],
                          {"version": "1"})["t"]
    assert none.cascade_off == "the model version has no first stage"
    assert "below the first stage's calibrated flag level (harassment 0.6 < 0.7)" in str(
        cascade_fits({"flag_levels": {"harassment": 0.7}}, {"harassment": 0.6}))
    first = np.array([Stage.first, Stage.second], np.int8)
    assert cascade_refused(first, "off") and not cascade_refused(first, None)
    assert not cascade_refused(None, "off")
    assert not cascade_refused(np.array([Stage.second], np.int8), "off")


def test_a_corrupt_first_stage_file_says_how_to_fix(tmp_path: Path) -> None:
    (tmp_path / FIRST_STAGE_FILE).write_bytes(b"not npz")
    with pytest.raises(ModelError, match="rebuild it or remove 'cascade'"):
        FirstStage.load(tmp_path, {"file": FIRST_STAGE_FILE})


def test_a_key_with_one_class_cannot_be_fitted() -> None:
    y = np.zeros((6, 1), np.float32)
    with pytest.raises(ModelError, match="needs both classes"):
        fit_first_stage(BENIGN, y, np.ones_like(y), ["spam"], HashedNgrams(1 << 10))


def test_fit_for_model_calibrates_on_validation_and_measures_on_test() -> None:
    from bastion.core.labelled import LabelledSet
    from bastion.training.cascade import fit_for_model

    texts = (BENIGN + TOXIC) * 6
    n = len(texts)
    y = np.array([[0.0] if t in BENIGN else [1.0] for t in texts], np.float32)
    data = LabelledSet(texts=texts, groups=[str(i) for i in range(n)], sources=["s"] * n,
                       targets=y, mask=np.ones((n, 1), bool), categories=["harassment"])
    split = (np.arange(n) // 12) % 3  # every split holds every text
    model = _model(None)
    model.metadata["curves"] = {}
    vi, ti = np.flatnonzero(split == 1), np.flatnonzero(split == 2)
    stage = fit_for_model(model, data, split == 0, (vi, y[vi]), (ti, y[ti]))
    assert model.first_stage is stage and model.metadata["cascade"]["keys"] == ["harassment"]
    assert stage.report["per_key"]["harassment"]["missed"] == 0
    assert stage.report["auroc"]["harassment"]["delta"] is not None
    with pytest.raises(ModelError, match="needs validation and test items"):
        fit_for_model(model, data, split == 0, (vi[:0], y[:0]), (ti, y[ti]))
