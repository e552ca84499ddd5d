"""The embedding cache: retraining the heads encodes only texts the backbone has not seen yet.

Heads-only retraining freezes the encoder, so an item's embedding depends only on the encoder's
weights and the text. Embeddings are kept on disk, one SQLite file (WAL) per encoder, keyed by
the SHA-256 of the text; the file is named after the encoder's fingerprint and refuses to serve
any other encoder. Misses are encoded in chunks and each chunk is committed as soon as it is
encoded, so an interrupted run keeps what it paid for.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.encoders import Encoder
from bastion.core.errors import ModelError

__all__ = ["CacheStats", "EmbeddingCache", "embeddings_dir"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS emb (sha BLOB PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID;
"""

# Hashes per `IN (...)` query: under the 999-parameter limit of SQLite builds before 3.32.
# Measured on 100k rows (384-d): as fast as joining a temporary table, and simpler.
_LOOKUP_BATCH = 500


def embeddings_dir(state_dir: str | Path) -> Path:
    """Where the embedding caches live under a state directory."""
    return Path(state_dir) / "embeddings"


@dataclass(frozen=True)
class CacheStats:
    """What one :meth:`EmbeddingCache.embed` call did.

    ``hits`` and ``misses`` count input rows (they add up to the number of texts); ``encoded``
    counts distinct texts sent to the encoder, so a text repeated in one call is encoded once.
    """

    hits: int
    misses: int
    encoded: int
    seconds_lookup: float
    seconds_encode: float


def _page_size(dim: int) -> int:
    """The smallest page on which one row (32-byte key + float32 vector) fits without overflow.

    A WITHOUT ROWID row larger than ((page - 12) * 64 / 255) - 23 bytes spills into an overflow
    page of its own: at 384-d on 4 KiB pages that made the file 2.5x larger (468 vs 190 MB per
    100k rows) and warm lookups up to 2x slower. 16 bytes cover the record header.
    """
    need = 4 * dim + 32 + 16
    for page in (4096, 8192, 16384, 32768):
        if (page - 12) * 64 // 255 - 23 >= need:
            return page
    return 65536  # SQLite's largest; dims above ~4000 overflow anyway


def _slug(fingerprint: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]", "_", fingerprint[:16])


def _connect(path: Path, dim: int) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA page_size={_page_size(dim)}")  # no-op once the file exists
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise ModelError(
            f"{path} is not a readable embedding cache ({e}); delete it and it will be rebuilt"
        ) from e
    return conn


class EmbeddingCache:
    """Embeddings of one encoder, on disk under ``directory``; several processes may share it.

    Args:
        directory: Folder of cache files (see :func:`embeddings_dir`); created if missing.
        encoder: The frozen backbone; its ``identity["fingerprint"]`` names the cache file.

    Raises:
        ModelError: The encoder has no fingerprint, or the file was written for another encoder.
    """

    def __init__(self, directory: str | Path, encoder: Encoder) -> None:
        identity = dict(encoder.identity)
        fingerprint = identity.get("fingerprint")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ModelError(
                f"encoder {identity.get('name', type(encoder).__name__)!r} has no "
                "identity['fingerprint']; the embedding cache needs one to tell backbones apart"
            )
        self.encoder = encoder
        self.dim = int(encoder.dim)
        self.fingerprint = fingerprint
        self.path = Path(directory) / f"{_slug(fingerprint)}-{self.dim}.sqlite"
        self._lock = threading.Lock()
        self._conn = _connect(self.path, self.dim)
        try:
            self._claim(identity)
        except BaseException:
            self._conn.close()
            raise

    def _claim(self, identity: dict[str, Any]) -> None:
        """Record this encoder in a new file, or check that an existing file is ours."""
        mine = {
            "fingerprint": self.fingerprint,
            "dim": str(self.dim),
            "identity": json.dumps(identity, sort_keys=True, default=str),
        }
        with self._lock, self._conn:
            # OR IGNORE: two processes opening a new file at once both end up comparing below.
            self._conn.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", mine.items()
            )
            stored = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        # The rest of the identity (path, precision label) may differ between machines that
        # load the same weights, so only the fingerprint and the dimension must match.
        if stored.get("fingerprint") != self.fingerprint or stored.get("dim") != str(self.dim):
            raise ModelError(
                f"{self.path} caches embeddings of encoder {stored.get('fingerprint')} "
                f"(dim {stored.get('dim')}), not of this encoder {self.fingerprint} "
                f"(dim {self.dim}); delete the file or point the cache at another directory"
            )

    def embed(
        self,
        texts: list[str],
        progress: Callable[[str, int, int], None] | None = None,
        chunk: int = 512,
    ) -> tuple[np.ndarray, CacheStats]:
        """Embeddings of ``texts`` in input order, encoding only what the cache lacks.

        Args:
            texts: The items to embed; duplicates are looked up and encoded once.
            progress: Called as ``progress("encoding", done, total)`` after each encoded chunk,
                where ``total`` is the number of distinct texts missing from the cache.
            chunk: Distinct misses per encoder call and per cache transaction.

        Returns:
            A float32 array of shape (len(texts), dim) and what the call did.

        Raises:
            ModelError: The encoder returned the wrong shape or non-finite values, or a stored
                row is corrupt. Chunks committed before the failure stay cached.
        """
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        started = time.perf_counter()
        slots: dict[bytes, int] = {}  # digest -> row of `unique`, in first-seen order
        first: list[int] = []  # position in `texts` of each distinct text
        inverse: list[int] = []
        for i, text in enumerate(texts):
            sha = hashlib.sha256(text.encode("utf-8")).digest()
            slot = slots.get(sha)
            if slot is None:
                slot = slots[sha] = len(first)
                first.append(i)
            inverse.append(slot)
        shas = list(slots)
        unique = np.empty((len(shas), self.dim), dtype=np.float32)
        found = self._lookup(shas, slots, unique)
        missing = np.flatnonzero(~found)
        rows = np.asarray(inverse, dtype=np.int64)
        misses = int(np.bincount(rows, minlength=len(shas))[missing].sum())
        seconds_lookup = time.perf_counter() - started

        started = time.perf_counter()
        for start in range(0, len(missing), chunk):
            part = missing[start:start + chunk]
            vecs = self._encode([texts[first[j]] for j in part])
            with self._lock, self._conn:  # one transaction per chunk: kept if a later one fails
                self._conn.executemany(
                    "INSERT OR IGNORE INTO emb (sha, vec) VALUES (?, ?)",
                    [(shas[j], vecs[k].tobytes()) for k, j in enumerate(part)],
                )
            unique[part] = vecs
            if progress is not None:
                progress("encoding", start + len(part), len(missing))
        stats = CacheStats(
            hits=len(texts) - misses,
            misses=misses,
            encoded=len(missing),
            seconds_lookup=seconds_lookup,
            seconds_encode=time.perf_counter() - started,
        )
        # Without duplicates, first-seen order is input order: skip a copy (150 MB at 100k x 384).
        return (unique if len(shas) == len(texts) else unique[rows]), stats

    def _lookup(self, shas: list[bytes], slots: dict[bytes, int], out: np.ndarray) -> np.ndarray:
        """Fill ``out`` with the cached rows; returns which of ``shas`` were found."""
        found = np.zeros(len(shas), dtype=bool)
        nbytes = 4 * self.dim
        for start in range(0, len(shas), _LOOKUP_BATCH):
            batch = shas[start:start + _LOOKUP_BATCH]
            sql = f"SELECT sha, vec FROM emb WHERE sha IN ({','.join('?' * len(batch))})"
            with self._lock:
                rows = self._conn.execute(sql, batch).fetchall()
            for sha, vec in rows:
                if len(vec) != nbytes:
                    raise ModelError(
                        f"{self.path} holds a {len(vec)}-byte vector for text {sha.hex()[:16]}..., "
                        f"expected {nbytes} ({self.dim} float32); delete the file to rebuild it"
                    )
                slot = slots[sha]
                out[slot] = np.frombuffer(vec, dtype=np.float32)
                found[slot] = True
        return found

    def _encode(self, texts: list[str]) -> np.ndarray:
        vecs = np.ascontiguousarray(self.encoder.encode(texts), dtype=np.float32)
        if vecs.shape != (len(texts), self.dim):
            raise ModelError(
                f"encoder {self.fingerprint[:16]}... returned shape {vecs.shape} for {len(texts)} "
                f"texts, expected ({len(texts)}, {self.dim}); nothing of this chunk was cached"
            )
        if not np.isfinite(vecs).all():  # cached, a NaN would poison every later retraining
            raise ModelError(
                f"encoder {self.fingerprint[:16]}... returned non-finite embeddings; nothing of "
                "this chunk was cached"
            )
        return vecs

    def __len__(self) -> int:
        """Number of cached embeddings (a full scan of the table)."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM emb").fetchone()[0])

    def close(self) -> None:
        """Close the connection; calling it again is harmless."""
        with self._lock:
            self._conn.close()
