from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from bastion.core.embcache import EmbeddingCache
from bastion.core.errors import ModelError


def vector(texts: list[str], dim: int) -> np.ndarray:
    """Deterministic float32 rows from the texts' SHA-256, vectorised so 100k stay cheap."""
    digests = b"".join(hashlib.sha256(t.encode()).digest() for t in texts)
    raw = np.frombuffer(digests, dtype=np.uint8).reshape(len(texts), 32).astype(np.float32)
    return np.tile(raw, (1, -(-dim // 32)))[:, :dim] / 255.0


class FakeEncoder:
    """Counts what it encodes; raises on call number ``fail_on_call`` (1-based)."""

    def __init__(
        self, dim: int = 8, fingerprint: str = "a" * 64, fail_on_call: int | None = None
    ) -> None:
        self.dim = dim
        self.fingerprint = fingerprint
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.encoded: list[str] = []
        self._lock = threading.Lock()

    @property
    def identity(self) -> dict[str, Any]:
        return {"name": "fake", "fingerprint": self.fingerprint, "dim": self.dim}

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        with self._lock:
            self.calls += 1
            if self.calls == self.fail_on_call:
                raise RuntimeError("encoder died")
            self.encoded.extend(texts)
        return vector(texts, self.dim)


@pytest.fixture
def caches() -> Iterator[list[EmbeddingCache]]:
    """Caches opened by a test, closed after it."""
    opened: list[EmbeddingCache] = []
    yield opened
    for c in opened:
        c.close()


def open_cache(caches: list[EmbeddingCache], db_url: str, enc: Any) -> EmbeddingCache:
    cache = EmbeddingCache(db_url, enc)
    caches.append(cache)
    return cache


def test_order_is_kept_and_duplicates_are_encoded_once(
    db_url: str, caches: list[EmbeddingCache]
) -> None:
    enc = FakeEncoder()
    cache = open_cache(caches, db_url, enc)
    texts = ["a", "b", "a", "c", "b", "a"]
    emb, stats = cache.embed(texts)
    assert emb.dtype == np.float32 and emb.shape == (6, 8)
    np.testing.assert_array_equal(emb, vector(texts, 8))
    assert enc.encoded == ["a", "b", "c"]
    assert (stats.hits, stats.misses, stats.encoded) == (0, 6, 3)
    assert len(cache) == 3


def test_second_call_encodes_nothing(db_url: str, caches: list[EmbeddingCache]) -> None:
    enc = FakeEncoder()
    cache = open_cache(caches, db_url, enc)
    texts = [f"item {i}" for i in range(50)] + ["item 3"]
    first, _ = cache.embed(texts)
    enc.encoded.clear()
    again, stats = cache.embed(texts)
    assert enc.encoded == []
    assert (stats.hits, stats.misses, stats.encoded) == (51, 0, 0)
    np.testing.assert_array_equal(again, first)


def test_only_new_texts_are_encoded(db_url: str, caches: list[EmbeddingCache]) -> None:
    enc = FakeEncoder()
    cache = open_cache(caches, db_url, enc)
    cache.embed(["old 1", "old 2"])
    enc.encoded.clear()
    texts = ["new 1", "old 2", "new 2", "old 1", "new 1"]
    emb, stats = cache.embed(texts)
    assert enc.encoded == ["new 1", "new 2"]
    assert (stats.hits, stats.misses, stats.encoded) == (2, 3, 2)
    np.testing.assert_array_equal(emb, vector(texts, 8))


def test_empty_input(db_url: str, caches: list[EmbeddingCache]) -> None:
    cache = open_cache(caches, db_url, FakeEncoder())
    emb, stats = cache.embed([])
    assert emb.shape == (0, 8) and (stats.hits, stats.misses, stats.encoded) == (0, 0, 0)


def test_another_fingerprint_has_rows_of_its_own(
    db_url: str, caches: list[EmbeddingCache]
) -> None:
    a, b = FakeEncoder(fingerprint="a" * 64), FakeEncoder(fingerprint="b" * 64)
    cache_a, cache_b = open_cache(caches, db_url, a), open_cache(caches, db_url, b)
    cache_a.embed(["x", "y"])
    _, stats = cache_b.embed(["x", "y"])
    assert stats.encoded == 2 and b.encoded == ["x", "y"]
    assert len(cache_a) == 2 and len(cache_b) == 2


def test_a_fingerprint_with_another_dimension_is_refused(
    db_url: str, caches: list[EmbeddingCache]
) -> None:
    open_cache(caches, db_url, FakeEncoder()).embed(["x"])
    with pytest.raises(ModelError, match=r"holds encoder a{64} with dim 8, not 16; one "
                                         "fingerprint names one set of weights"):
        EmbeddingCache(db_url, FakeEncoder(dim=16))


def test_an_encoder_without_fingerprint_is_refused(db_url: str) -> None:
    enc = FakeEncoder(fingerprint="")
    with pytest.raises(ModelError, match="has no identity\\['fingerprint'\\]"):
        EmbeddingCache(db_url, enc)


def test_embeddings_persist_across_instances(db_url: str) -> None:
    texts = [f"t{i}" for i in range(20)]
    first = EmbeddingCache(db_url, FakeEncoder())
    emb, _ = first.embed(texts)
    first.close()
    enc = FakeEncoder()
    second = EmbeddingCache(db_url, enc)
    try:
        again, stats = second.embed(texts[::-1])
    finally:
        second.close()
    assert enc.calls == 0 and stats.hits == 20
    np.testing.assert_array_equal(again, emb[::-1])


def test_progress_is_reported_after_each_chunk(
    db_url: str, caches: list[EmbeddingCache]
) -> None:
    enc = FakeEncoder()
    cache = open_cache(caches, db_url, enc)
    cache.embed(["t0", "t1"])
    calls: list[tuple[str, int, int]] = []
    texts = [f"t{i}" for i in range(12)]  # 10 misses
    cache.embed(texts, progress=lambda *a: calls.append(a), chunk=4)
    assert calls == [("encoding", 4, 10), ("encoding", 8, 10), ("encoding", 10, 10)]
    assert enc.calls == 1 + 3
    calls.clear()
    cache.embed(texts, progress=lambda *a: calls.append(a))
    assert calls == []  # nothing to encode, nothing to report


def test_an_interrupted_run_keeps_the_chunks_it_encoded(
    db_url: str, caches: list[EmbeddingCache]
) -> None:
    texts = [f"t{i}" for i in range(10)]
    cache = open_cache(caches, db_url, FakeEncoder(fail_on_call=3))
    with pytest.raises(RuntimeError, match="encoder died"):
        cache.embed(texts, chunk=3)
    assert len(cache) == 6
    enc = FakeEncoder()
    resumed = open_cache(caches, db_url, enc)
    emb, stats = resumed.embed(texts, chunk=3)
    assert enc.encoded == texts[6:]
    assert (stats.hits, stats.encoded) == (6, 4)
    np.testing.assert_array_equal(emb, vector(texts, 8))


class BadEncoder(FakeEncoder):
    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = super().encode(texts, batch_size)
        return out[:, :-1] if self.calls == 1 else np.full_like(out, np.nan)


def test_bad_encoder_output_is_refused_and_not_cached(
    db_url: str, caches: list[EmbeddingCache]
) -> None:
    cache = open_cache(caches, db_url, BadEncoder())
    with pytest.raises(ModelError, match=r"returned shape \(2, 7\) for 2 texts, expected \(2, 8\)"):
        cache.embed(["x", "y"])
    with pytest.raises(ModelError, match="non-finite"):
        cache.embed(["x", "y"])
    assert len(cache) == 0


def test_threads_share_one_cache(db_url: str, caches: list[EmbeddingCache]) -> None:
    enc = FakeEncoder()
    cache = open_cache(caches, db_url, enc)
    texts = [f"t{i}" for i in range(300)]
    results: dict[int, np.ndarray] = {}

    def work(offset: int) -> None:
        results[offset] = cache.embed(texts[offset:offset + 200], chunk=16)[0]

    threads = [threading.Thread(target=work, args=(o,)) for o in (0, 50, 100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 50, 100] and len(cache) == 300
    for offset, emb in results.items():
        np.testing.assert_array_equal(emb, vector(texts[offset:offset + 200], 8))


def test_100k_texts_warm_lookup_returns_the_right_rows(
    db_url: str, caches: list[EmbeddingCache]
) -> None:
    n = 100_000
    texts = [f"msg {i}" for i in range(n)]
    enc = FakeEncoder(dim=16)
    cache = open_cache(caches, db_url, enc)
    t0 = time.perf_counter()
    _, cold = cache.embed(texts, chunk=4096)
    t_cold = time.perf_counter() - t0
    assert cold.encoded == n and len(cache) == n
    enc.encoded.clear()
    order = np.random.default_rng(0).permutation(n)
    shuffled = [texts[i] for i in order]
    t0 = time.perf_counter()
    emb, warm = cache.embed(shuffled)
    t_warm = time.perf_counter() - t0
    assert enc.encoded == [] and warm.hits == n
    np.testing.assert_array_equal(emb, vector(shuffled, 16))
    # Informational only (run with -s): no wall-clock assertion on shared CI machines.
    print(f"\n100k rows, dim 16: cold {t_cold:.2f}s, warm {t_warm:.2f}s "
          f"(lookup {warm.seconds_lookup:.2f}s)")
