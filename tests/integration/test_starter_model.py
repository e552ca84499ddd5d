"""The shipped starter model, behaviourally (Made-With-ML style), and its MLflow round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bastion.core.encoders import create_encoder
from bastion.core.model import ModerationModel
from bastion.core.settings import Settings
from bastion.registry.pyfunc import BastionPyfunc, legacy_module_paths, load_pyfunc
from bastion.training.starter import SHIPPED_DIR

from .conftest import Starter

pytestmark = [pytest.mark.model, pytest.mark.mlflow]

ABUSIVE = [
    "shut up you stupid bitch, nobody wants you here",
    "you are a worthless disgusting idiot and everyone hates you",
    "you fucking moron, go cry somewhere else",
]
BENIGN = [
    "thanks for the help yesterday, see you at practice",
    "the weather is lovely today, let's go for a walk",
    "can you send me the report before the meeting?",
]
SPAM = ["WINNER!! You have won a 1000 cash prize. Text CLAIM to 80082 now, T&C apply",
        "URGENT: your mobile number won a free holiday, call 09061701461 to claim"]


def column(model: ModerationModel, texts: list[str], key: str) -> np.ndarray:
    return model.score(texts)[1][:, model.head_keys.index(key)]


def test_the_shipped_heads_cover_the_categories_users_mean(starter: Starter) -> None:
    assert set(starter.model.head_keys) >= {"hate", "harassment", "violence", "self_harm",
                                             "spam", "profanity"}
    assert starter.model.metadata["kind"] == "starter"


def test_abusive_text_outranks_benign_text(starter: Starter) -> None:
    for key in ("harassment", "profanity"):
        abusive, benign = column(starter.model, ABUSIVE, key), column(starter.model, BENIGN, key)
        assert abusive.min() > benign.max(), (key, abusive, benign)


def test_spam_outranks_ordinary_messages(starter: Starter) -> None:
    spam, benign = column(starter.model, SPAM, "spam"), column(starter.model, BENIGN, "spam")
    assert spam.min() > benign.max()


def test_directional_adding_an_insult_raises_harassment(starter: Starter) -> None:
    base = ["you played that level really well", "what time does the match start"]
    worse = [t + ", you dumb bitch" for t in base]
    assert (column(starter.model, worse, "harassment")
            > column(starter.model, base, "harassment")).all()


def test_invariance_a_name_does_not_change_the_decision(starter: Starter) -> None:
    from importlib import resources

    import yaml

    from bastion.core.decision import decide, resolve_policy
    from bastion.core.policy import parse_policy

    texts = [f"{name} is bringing snacks to the game tonight"
             for name in ("Maria", "Jamal", "Wei", "Olga")]
    policy = parse_policy(yaml.safe_load(
        resources.files("bastion.core").joinpath("default_policy.yaml").read_text()))
    demo = resolve_policy(policy, starter.model.head_keys, starter.model.metadata)["demo"]
    _, scores = starter.model.score(texts)
    assert {decide(demo, t, s)["decision"] for t, s in zip(texts, scores, strict=True)} == {
        "allow"}
    # the scores do move with the name (measured: hate 0.04 for Maria, 0.20 for Wei): a known
    # weakness, stated in docs/starter-model.md; it must stay far below the review band
    for key in ("hate", "harassment"):
        s = column(starter.model, texts, key)
        assert s.max() - s.min() < 0.25, key


def test_metadata_records_sources_metrics_and_thin_categories(starter: Starter) -> None:
    meta = starter.model.metadata
    assert meta["data"]["fingerprint"] and meta["data"]["n_test"] > 0
    assert meta["command"].startswith("bastion starter build")
    for name, src in meta["data"]["sources"].items():
        assert len(src["sha256"]) == 64 and src["licence"], name
    for key in meta["categories"]:
        entry = meta["metrics"][key]["all"]
        assert entry["n_pos"] >= 1 and "ece" in entry, key
        if "auroc" in entry:
            lo, hi = entry["auroc_ci"]
            assert lo <= entry["auroc"] <= hi, key
    assert meta["metrics"]["spam"]["all"]["auroc"] > 0.9
    assert "sexual" in meta["thin"]  # no user-generated source labels it: said, not hidden
    assert set(meta["curves"]) <= set(meta["categories"])


def test_the_artifact_is_small_and_keeps_no_source_text() -> None:
    size = sum(p.stat().st_size for p in SHIPPED_DIR.iterdir())
    assert size < 3_000_000, f"{size} bytes: the artifact holds heads and metrics only"
    text = (SHIPPED_DIR / "metadata.json").read_text()
    assert json.loads(text)["kind"] == "starter"
    for probe in SPAM + ["Go until jurong point, crazy.. Available only in bugis"]:
        assert probe not in text  # SMS Spam Collection texts are not copied in


def test_hf_encoder_loads_any_encoder_directory(starter: Starter) -> None:
    """The generic 'hf' encoder on the same directory gives the same embeddings."""
    minilm = starter.model.encoder
    hf = create_encoder("hf", path=minilm.identity["path"], precision="fp32")
    ref = create_encoder("minilm", precision="fp32")
    np.testing.assert_allclose(hf.encode(BENIGN), ref.encode(BENIGN), atol=1e-6)
    assert hf.identity["fingerprint"] == minilm.identity["fingerprint"]


def test_registry_champion_scores_like_the_shipped_model(starter: Starter,
                                                         settings: Settings) -> None:
    import mlflow.artifacts

    from bastion.registry.store import CHAMPION, ModelRegistry

    reg = ModelRegistry(settings)
    info = reg.by_alias(CHAMPION)
    assert info.version == starter.version and CHAMPION in info.aliases
    assert info.tags["bastion.data_fingerprint"] == starter.model.metadata["data"]["fingerprint"]
    assert "sexual" in info.tags["bastion.thin_categories"]
    run = reg.client.get_run(info.run_id)
    assert "spam.all.auroc" in run.data.metrics  # the artifact's metrics, per source
    snapshot = mlflow.artifacts.load_dict(f"runs:/{info.run_id}/policy_snapshot.json")
    assert set(snapshot["tenants"]) == {"acme", "studio"}
    texts = ABUSIVE + BENIGN
    expected = starter.model.score(texts)[1]
    shipped = ModerationModel.load(SHIPPED_DIR, precision=starter.model.encoder.identity[
        "precision"])
    np.testing.assert_allclose(shipped.score(texts)[1], expected, atol=1e-6)
    loaded = ModerationModel.load(reg.download(info.version))
    np.testing.assert_array_equal(loaded.score(texts)[1], expected)
    pyfunc = load_pyfunc(f"models:/{settings.model_name}@{CHAMPION}")
    out = pyfunc.predict(pd.DataFrame({"text": texts}))
    np.testing.assert_array_equal(out[starter.model.head_keys].to_numpy(), expected)


def test_a_version_logged_under_the_old_module_paths_still_loads(starter: Starter,
                                                                 settings: Settings) -> None:
    """Versions registered before the ``bastion`` namespace pickled ``registry.pyfunc``."""
    import sys

    import mlflow.pyfunc

    from bastion.registry.store import ModelRegistry

    reg = ModelRegistry(settings)
    old = BastionPyfunc.__module__
    with legacy_module_paths():  # pickle the class by its old path, as those versions did
        BastionPyfunc.__module__ = "registry.pyfunc"
        try:
            info = reg.log_version(SHIPPED_DIR, run_name="legacy-path", params={}, metrics={},
                                   tags={"bastion.kind": "legacy"}, validate=False)
        finally:
            BastionPyfunc.__module__ = old
    assert "registry" not in sys.modules
    uri = f"models:/{settings.model_name}/{info.version}"
    with pytest.raises(ModuleNotFoundError, match="registry"):
        mlflow.pyfunc.load_model(uri)
    texts = ABUSIVE + BENIGN
    out = load_pyfunc(uri).predict(pd.DataFrame({"text": texts}))
    shipped = ModerationModel.load(SHIPPED_DIR)  # the artifact's own precision, as pyfunc loads
    np.testing.assert_allclose(out[shipped.head_keys].to_numpy(), shipped.score(texts)[1],
                               atol=1e-6)
    assert "registry" not in sys.modules and "registry.pyfunc" not in sys.modules


def test_a_version_without_a_drift_reference_gets_one(starter: Starter,
                                                      settings: Settings) -> None:
    """Versions registered before references were logged: ``bastion up`` adds one."""
    from bastion.registry.store import ModelRegistry
    from bastion.training.reference import REFERENCE_SIZE, ensure_reference

    reg = ModelRegistry(settings)
    assert reg.reference_texts(starter.version)  # register_starter logs one
    info = reg.log_version(SHIPPED_DIR, run_name="no-reference", params={}, metrics={},
                           tags={"bastion.kind": "starter"}, validate=False)
    assert reg.reference_texts(info.version) is None
    assert ensure_reference(settings, reg, info.version)
    texts = reg.reference_texts(info.version)
    assert texts and len(texts) <= REFERENCE_SIZE and all(isinstance(t, str) for t in texts)
    assert not ensure_reference(settings, reg, info.version)  # once only
