"""Labelled sources: who labels what (strict), what only trains (weak), and honest metrics."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.core.labelled import WEAK_WEIGHT, LabelledSet
from bastion.core.model import HeadSpec
from bastion.training.datasets import (
    CATEGORIES,
    SOURCES,
    available_sources,
    dev_data_dir,
    load_pyrit,
    load_sms_spam,
    load_starter_data,
)
from bastion.training.starter import build_starter
from tests._requires import dev_data


def col(name: str) -> int:
    return CATEGORIES.index(name)


def test_sms_ham_is_a_weak_negative_never_a_strict_one() -> None:
    sms = load_sms_spam(limit=500)
    assert sms.mask[:, col("spam")].all() and not np.delete(sms.mask, col("spam"), 1).any()
    ham = sms.targets[:, col("spam")] == 0
    assert sms.weak is not None and sms.weak[ham][:, col("violence")].all()
    # alone, nobody labels violence: its weak negatives would only push the head down
    assert np.allclose(sms.loss_weights[:, col("violence")], 0.0)
    both = LabelledSet.concat([sms, load_pyrit()])  # PyRIT's raters label violence
    w = both.loss_weights[: len(sms)]
    assert np.allclose(w[ham][:, col("violence")], WEAK_WEIGHT)
    assert np.allclose(w[:, col("spam")], 1.0)
    assert np.allclose(w[:, col("profanity")], 0.0)  # labelled by neither


def test_pyrit_labels_only_the_category_the_raters_scored() -> None:
    pyrit = load_pyrit()
    assert (pyrit.mask.sum(1) == 1).all()
    assert {c for c in CATEGORIES if pyrit.mask[:, col(c)].any()} == {
        "hate", "violence", "self_harm", "sexual"}


def test_a_missing_dev_data_folder_leaves_the_packaged_sources(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.setenv("BASTION_DEV_DATA", str(tmp_path / "nowhere"))
    assert dev_data_dir() is None
    assert available_sources() == [n for n, s in SOURCES.items() if s.packaged]
    data = load_starter_data(limit_per_source=50)
    assert set(data.sources) == {"pyrit", "sms_spam"}
    with pytest.raises(FileNotFoundError, match="development data .* is missing"):
        SOURCES["toxic_spans"].loader()


def test_concat_and_subset_keep_weak_negatives_apart() -> None:
    a = load_sms_spam(limit=20)
    b = LabelledSet(["x"], ["g"], ["s"], np.zeros((1, len(CATEGORIES)), np.float32),
                    np.ones((1, len(CATEGORIES)), bool), list(CATEGORIES))
    both = LabelledSet.concat([a, b]).with_columns([*CATEGORIES, "acme/griefing"])
    assert both.weak is not None and not both.weak[-1].any() and not both.weak[:, -1].any()
    part = both.subset(np.array([0, len(both) - 1]))
    assert part.weak is not None and part.weak.shape == (2, len(CATEGORIES) + 1)


def test_toxic_spans_types_become_categories() -> None:
    dev_data("toxic-spans/acl2022-raw/spans.csv")
    data = SOURCES["toxic_spans"].loader(limit=3000)
    for cat in ("hate", "harassment", "violence", "profanity"):
        y = data.targets[data.mask[:, col(cat)], col(cat)] >= 0.5
        assert 0 < y.sum() < len(y), cat  # both classes, labelled by raters
    assert not data.mask[:, col("spam")].any()  # nobody judged these posts for spam


def test_build_starter_measures_per_source_across_sources_and_flags_thin() -> None:
    rng = np.random.default_rng(1)
    n, k = 1200, len(CATEGORIES)
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    targets = np.zeros((n, k), np.float32)
    mask = np.zeros((n, k), bool)
    sources = np.array(["davidson"] * 600 + ["toxic_spans"] * 500 + ["pyrit"] * 100)
    targets[:, col("hate")] = emb[:, 0] > 0.5
    mask[:1100, col("hate")] = True
    targets[1100:, col("sexual")] = emb[1100:, 1] > 0
    mask[1100:, col("sexual")] = True
    data = LabelledSet([f"t{i}" for i in range(n)], [f"g{i}" for i in range(n)],
                       sources.tolist(), targets, mask, list(CATEGORIES))

    class Enc:
        dim = 8
        identity = {"name": "fake", "path": "-", "fingerprint": "f", "dim": 8}

        def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
            return emb[[int(t[1:]) for t in texts]]

    model = build_starter(data, Enc(), sources={}, command="test")  # type: ignore[arg-type]
    meta = model.metadata
    assert model.head_keys == ["hate", "sexual"]
    assert meta["metrics"]["hate"]["all"]["auroc"] > 0.9
    assert set(meta["metrics"]["hate"]) == {"all", "davidson", "toxic_spans"}
    assert set(meta["cross_source"]["hate"]) == {"davidson", "toxic_spans"}
    assert meta["cross_source"]["hate"]["davidson"]["auroc"] > 0.9  # the same signal
    assert "only LLM responses" in meta["thin"]["sexual"]
    assert meta["thin"]["spam"].startswith("no source labels it")
    assert [HeadSpec.parse(k).category for k in model.head_keys] == ["hate", "sexual"]
