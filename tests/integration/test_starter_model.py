"""The starter model, behaviourally (Made-With-ML style), and its MLflow round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.encoders import create_encoder
from core.model import ModerationModel
from core.settings import Settings
from training.datasets import davidson_path

from .conftest import Starter

pytestmark = [pytest.mark.model, pytest.mark.mlflow]

ABUSIVE = [
    "shut up you stupid bitch, nobody wants you here",
    "all of those people are subhuman trash and should be wiped out",
    "you fucking retard, kill yourself",
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


needs_davidson = pytest.mark.skipif(
    davidson_path() is None, reason="the 'offensive' head learns from the Davidson tweets in "
    "../shared/data (or BASTION_DAVIDSON_CSV), which are not present")


@needs_davidson
def test_abusive_text_outranks_benign_text(starter: Starter) -> None:
    m = starter.model
    for key in ("offensive", "hate"):
        abusive, benign = column(m, ABUSIVE, key), column(m, BENIGN, key)
        assert abusive.min() > benign.max(), (key, abusive, benign)


def test_spam_outranks_ordinary_messages(starter: Starter) -> None:
    spam, benign = column(starter.model, SPAM, "spam"), column(starter.model, BENIGN, "spam")
    assert spam.min() > benign.max()


@needs_davidson
def test_directional_adding_an_insult_raises_offensive(starter: Starter) -> None:
    base = ["you played that level really well", "what time does the match start"]
    worse = [t + ", you dumb bitch" for t in base]
    assert (column(starter.model, worse, "offensive") > column(starter.model, base, "offensive")
            ).all()


@needs_davidson
def test_invariance_a_name_does_not_change_the_decision(starter: Starter) -> None:
    texts = [f"{name} is bringing snacks to the game tonight"
             for name in ("Maria", "Jamal", "Wei", "Olga")]
    s = column(starter.model, texts, "offensive")
    assert s.max() - s.min() < 0.1


def test_metadata_reports_held_out_metrics(starter: Starter) -> None:
    meta = starter.model.metadata
    assert meta["data"]["fingerprint"] and meta["data"]["n_test"] > 0
    assert meta["metrics"]["spam"]["auroc"] > 0.9
    if davidson_path() is not None:
        assert meta["metrics"]["offensive"]["auroc"] > 0.85
    assert set(meta["curves"]) <= set(meta["categories"])


def test_hf_encoder_loads_any_encoder_directory(starter: Starter) -> None:
    """The generic 'hf' encoder on the same directory gives the same embeddings."""
    minilm = starter.model.encoder
    hf = create_encoder("hf", path=minilm.identity["path"], precision="fp32")
    ref = create_encoder("minilm", precision="fp32")
    np.testing.assert_allclose(hf.encode(BENIGN), ref.encode(BENIGN), atol=1e-6)
    assert hf.identity["fingerprint"] == minilm.identity["fingerprint"]


def test_registry_champion_scores_like_the_trained_model(starter: Starter,
                                                         settings: Settings) -> None:
    import mlflow.artifacts
    import mlflow.pyfunc

    from registry.store import CHAMPION, ModelRegistry

    reg = ModelRegistry(settings)
    info = reg.by_alias(CHAMPION)
    assert info.version == starter.version and CHAMPION in info.aliases
    assert info.tags["bastion.data_fingerprint"] == starter.model.metadata["data"]["fingerprint"]
    run = reg.client.get_run(info.run_id)
    assert "acme.spam.precision_at_block" in run.data.metrics  # per (tenant, category)
    snapshot = mlflow.artifacts.load_dict(f"runs:/{info.run_id}/policy_snapshot.json")
    assert set(snapshot["tenants"]) == {"acme", "studio"}
    texts = ABUSIVE + BENIGN
    expected = starter.model.score(texts)[1]
    loaded = ModerationModel.load(reg.download(info.version))
    np.testing.assert_array_equal(loaded.score(texts)[1], expected)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@{CHAMPION}")
    out = pyfunc.predict(pd.DataFrame({"text": texts}))
    np.testing.assert_array_equal(out[starter.model.head_keys].to_numpy(), expected)
