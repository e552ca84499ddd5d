"""``auto`` numerics: the fastest candidate whose embeddings stay close to fp32's, skipping
what cannot run here, cached per machine key; fakes stand in for the encoder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from bastion.core.errors import UnknownPluginError
from bastion.core.numerics import (
    MIN_COSINE,
    Numerics,
    cache_key,
    choose,
    create_numerics,
    numerics_names,
)

TEXTS = tuple(f"text {i}" for i in range(64))
DIM = 8


def _emb(texts: list[str], noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    e = np.stack([np.random.default_rng(int(t.split()[1])).normal(size=DIM) for t in texts])
    e = e + noise * rng.normal(size=e.shape)
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


class FakeModel:
    """A model in one numerics: seconds per item, and how far its embeddings are from fp32."""

    def __init__(self, name: str, per_item_s: float, noise: float = 0.0) -> None:
        self.name, self.per_item_s, self.noise = name, per_item_s, noise


def run(model: FakeModel, texts: list[str], batch_size: int) -> np.ndarray:
    time.sleep(model.per_item_s * len(texts))
    return _emb(texts, model.noise)


class Factory:
    """name -> Numerics whose ``apply`` gives a FakeModel; counts conversions."""

    def __init__(self, specs: dict[str, tuple[float, float, str | None]]) -> None:
        self.specs = specs  # name -> (seconds per item, noise, why unavailable)
        self.applied: list[str] = []

    def __call__(self, name: str) -> Numerics:
        per_item, noise, why = self.specs[name]

        def apply(_model: object) -> FakeModel:
            self.applied.append(name)
            return FakeModel(name, per_item, noise)

        return Numerics(name, lambda: why, apply)


SPECS = {
    "fp32": (0.002, 0.0, None),
    "fast": (0.0005, 0.01, None),  # 4x faster, cosine ~1
    "faster_but_wrong": (0.0, 2.0, None),  # fastest, embeddings unrelated to fp32's
    "absent": (0.0, 0.0, "no such instructions here"),
    "slow": (0.05, 0.0, None),  # 25x slower: stops early
}


def test_auto_keeps_the_fastest_candidate_that_stays_close_to_fp32() -> None:
    factory = Factory(SPECS)
    model, choice = choose(FakeModel("fp32", 0.002), run, list(SPECS), texts=TEXTS,
                           factory=factory)
    assert choice.chosen == "fast" and isinstance(model, FakeModel) and model.name == "fast"
    m = choice.measured
    assert m["fast"]["passed"] and m["fast"]["cosine_mean"] >= MIN_COSINE
    assert not m["faster_but_wrong"]["passed"]
    assert "cosine" in m["faster_but_wrong"]["note"]
    assert choice.skipped == {"absent": "no such instructions here"}
    assert m["slow"]["items_per_s"] is None and "stopped" in m["slow"]["note"]
    assert m["fp32"]["items_per_s"] > 0 and not choice.cached


def test_fp32_stays_when_nothing_beats_it() -> None:
    specs = {"fp32": SPECS["fp32"], "slow": SPECS["slow"], "absent": SPECS["absent"]}
    model, choice = choose(FakeModel("fp32", 0.002), run, list(specs), texts=TEXTS,
                           factory=Factory(specs))
    assert choice.chosen == "fp32" and model.name == "fp32"


def test_a_cached_choice_is_reused_without_measuring(tmp_path: Path) -> None:
    cache = tmp_path / "numerics.json"
    _, first = choose(FakeModel("fp32", 0.002), run, list(SPECS), cache=cache, key="k1",
                      texts=TEXTS, factory=Factory(SPECS))
    assert json.loads(cache.read_text())["k1"]["chosen"] == "fast"
    factory = Factory(SPECS)
    calls: list[int] = []

    def counting(model: FakeModel, texts: list[str], batch_size: int) -> np.ndarray:
        calls.append(len(texts))
        return run(model, texts, batch_size)

    model, again = choose(FakeModel("fp32", 0.002), counting, list(SPECS), cache=cache,
                          key="k1", texts=TEXTS, factory=factory)
    assert again.cached and again.chosen == "fast" and model.name == "fast"
    assert calls == [] and factory.applied == ["fast"]
    assert again.measured == first.measured
    # another machine key measures afresh and keeps both records
    _, other = choose(FakeModel("fp32", 0.002), run, ["fp32"], cache=cache, key="k2",
                      texts=TEXTS, factory=Factory(SPECS))
    assert not other.cached and set(json.loads(cache.read_text())) == {"k1", "k2"}


def test_a_cached_choice_that_cannot_run_now_is_measured_again(tmp_path: Path) -> None:
    cache = tmp_path / "numerics.json"
    cache.write_text(json.dumps({"k": {"chosen": "absent", "requested": "auto"}}))
    _, choice = choose(FakeModel("fp32", 0.002), run, list(SPECS), cache=cache, key="k",
                       texts=TEXTS, factory=Factory(SPECS))
    assert not choice.cached and choice.chosen == "fast"
    cache.write_text("{torn")
    _, choice = choose(FakeModel("fp32", 0.002), run, ["fp32"], cache=cache, key="k",
                       texts=TEXTS, factory=Factory(SPECS))
    assert choice.chosen == "fp32" and json.loads(cache.read_text())["k"]["chosen"] == "fp32"


def test_the_cache_key_follows_threads_fingerprint_and_isa_limits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = cache_key("abc", 2)
    assert cache_key("abc", 2) == base
    assert cache_key("abc", 4) != base and cache_key("abd", 2) != base
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert cache_key("abc", 2) != base


def test_the_registry_names_the_numerics_and_refuses_unknown_ones() -> None:
    # every registered numerics has the held-out AUROC check (tests/integration/
    # test_numerics_quality.py parametrises over the registry) and is named here
    assert set(numerics_names()) == {"fp32", "bf16", "int8"}
    assert create_numerics("fp32").available() is None
    with pytest.raises(UnknownPluginError, match="unknown numerics 'fp16'; known: .*int8"):
        create_numerics("fp16")


def test_int8_keeps_the_feed_forward_layers_in_fp32() -> None:
    from bastion.core.numerics import _ffn

    kept = [n for n in ("encoder.layer.0.attention.self.query",
                        "encoder.layer.0.attention.output.dense",
                        "encoder.layer.0.intermediate.dense", "encoder.layer.5.output.dense",
                        "pooler.dense") if _ffn(n)]
    assert kept == ["encoder.layer.0.intermediate.dense", "encoder.layer.5.output.dense"]
