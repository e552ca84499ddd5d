from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bastion.core.encoders import encoder_names
from bastion.core.errors import ModelError, UnknownPluginError
from bastion.core.model import HeadSpec, LinearHeads, ModerationModel, create_heads, head_kinds
from bastion.core.plugins import PluginRegistry


class FakeEncoder:
    """A deterministic stand-in for the backbone (unit tests only)."""

    dim = 4

    def __init__(self, fingerprint: str = "f" * 64) -> None:
        self._fp = fingerprint

    @property
    def identity(self) -> dict[str, Any]:
        return {"name": "fake", "path": "-", "fingerprint": self._fp, "dim": 4,
                "max_length": 8, "pooling": "mean", "normalize": True, "precision": "fp32"}

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return np.array([[len(t), t.count("!"), 1.0, 0.0] for t in texts], dtype=np.float32)


def heads() -> LinearHeads:
    specs = [HeadSpec("hate"), HeadSpec("spam"), HeadSpec("spam", tenant="acme")]
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    return LinearHeads(specs, w, np.array([0.0, -1.0, 1.0], dtype=np.float32))


def test_stacked_heads_equal_one_head_at_a_time() -> None:
    h = heads()
    emb = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    stacked = h.score(emb)
    for j in range(3):
        single = 1 / (1 + np.exp(-(emb @ h.weight[:, j] + h.bias[j])))
        np.testing.assert_allclose(stacked[:, j], single, rtol=1e-5)
    assert h.keys == ["hate", "spam", "acme/spam"]
    assert HeadSpec.parse("acme/spam") == HeadSpec("spam", "acme")


def test_mismatched_or_duplicate_heads_are_refused() -> None:
    with pytest.raises(ModelError, match="do not match 2 head"):
        LinearHeads([HeadSpec("a"), HeadSpec("b")], np.zeros((4, 3)), np.zeros(3))
    with pytest.raises(ModelError, match="duplicate head keys"):
        LinearHeads([HeadSpec("a"), HeadSpec("a")], np.zeros((4, 2)), np.zeros(2))


def test_save_and_load_give_the_same_scores(tmp_path: Path) -> None:
    enc = FakeEncoder()
    model = ModerationModel(enc, heads(), {"categories": ["hate", "spam"]})
    model.save(tmp_path / "m")
    loaded = ModerationModel.load(tmp_path / "m", encoder=enc)
    texts = ["hello!", "buy now!!!"]
    np.testing.assert_array_equal(model.score(texts)[1], loaded.score(texts)[1])
    assert loaded.metadata["heads"]["keys"] == ["hate", "spam", "acme/spam"]


def test_a_different_backbone_is_refused(tmp_path: Path) -> None:
    ModerationModel(FakeEncoder(), heads()).save(tmp_path / "m")
    with pytest.raises(ModelError, match="other weights than the heads were trained on"):
        ModerationModel.load(tmp_path / "m", encoder=FakeEncoder("0" * 64))


def test_corrupt_artifacts_are_refused(tmp_path: Path) -> None:
    ModerationModel(FakeEncoder(), heads()).save(tmp_path / "m")
    (tmp_path / "m" / "heads.npz").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot load heads"):
        ModerationModel.load(tmp_path / "m", encoder=FakeEncoder())
    (tmp_path / "m" / "metadata.json").write_text("{")
    with pytest.raises(ModelError, match="corrupt metadata"):
        ModerationModel.load(tmp_path / "m", encoder=FakeEncoder())
    with pytest.raises(ModelError, match="not a Bastion model artifact"):
        ModerationModel.load(tmp_path / "nothing")


def test_plugin_registry_lists_known_names_and_refuses_duplicates() -> None:
    reg: PluginRegistry[int] = PluginRegistry("widget")
    reg.register("one")(lambda: 1)
    with pytest.raises(ValueError, match="widget 'one' is already registered"):
        reg.register("one")(lambda: 2)
    with pytest.raises(UnknownPluginError, match="unknown widget 'two'; known: one"):
        reg.create("two")
    with pytest.raises(UnknownPluginError, match="unknown head kind 'mlp'; known: linear"):
        create_heads("mlp")


# Completeness (evidently's pattern): every registered plug-in has a test. A new encoder or
# head kind must be added here together with the test that covers it.
TESTED_ENCODERS = {
    "hf": "tests/integration/test_starter_model.py (loads the MiniLM directory through 'hf')",
    "minilm": "tests/integration/test_starter_model.py",
    "use-multilingual": "test_the_multilingual_encoder_embeds_languages_alike_and_round_trips",
}
TESTED_HEADS = {"linear": "test_stacked_heads_equal_one_head_at_a_time"}


def test_every_registered_plugin_has_a_test() -> None:
    assert set(encoder_names()) == set(TESTED_ENCODERS)
    assert set(head_kinds()) == set(TESTED_HEADS)


def test_the_multilingual_encoder_embeds_languages_alike_and_round_trips(tmp_path: Path) -> None:
    from bastion.core.encoders import create_encoder

    enc = create_encoder("use-multilingual", threads=1)
    emb = enc.encode(["I will hurt you", "너를 다치게 할 거야", "je vais te faire du mal",
                      "the weather is nice today"])
    assert emb.shape == (4, 512) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    sim = emb @ emb.T
    # a threat in Korean and French sits nearer the English threat than small talk does
    assert sim[0, 1] > sim[0, 3] and sim[0, 2] > sim[0, 3]
    ident = enc.identity
    assert ident["name"] == "use-multilingual" and ident["dim"] == 512
    assert len(ident["fingerprint"]) == 64 and ident["precision"] == "fp32"
    heads = LinearHeads([HeadSpec.parse("violence")], np.ones((512, 1), np.float32),
                        np.zeros(1, np.float32))
    model = ModerationModel(encoder=enc, heads=heads, metadata={"kind": "test"})
    model.save(tmp_path / "m")
    back = ModerationModel.load(tmp_path / "m")  # rebuilt from its identity, fingerprint checked
    assert back.encoder.identity["fingerprint"] == ident["fingerprint"]
    np.testing.assert_allclose(back.score(["너를 다치게 할 거야"])[1], model.score(
        ["너를 다치게 할 거야"])[1], atol=1e-6)
    with pytest.raises(ModelError, match="float32"):
        create_encoder("use-multilingual", precision="bf16")
