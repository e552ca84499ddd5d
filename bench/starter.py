"""Train the starter model exactly as ``bastion up`` does and record its held-out metrics.

Run: ``.venv/bin/python bench/starter.py`` (about a minute). Writes bench/results/starter.json,
summarised in docs/starter-model.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._traffic import machine, write_results  # noqa: E402
from core.settings import load_settings  # noqa: E402
from training.starter import train_starter  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bastion-starter-") as state:
        t0 = time.perf_counter()
        version, model = train_starter(load_settings(state))
        seconds = time.perf_counter() - t0
    meta = model.metadata
    results = {
        "benchmark": "starter-model",
        "machine": machine(),
        "train_seconds": round(seconds, 1),
        "encoder": {k: model.encoder.identity[k] for k in ("name", "precision", "max_length")},
        "data": meta["data"],
        "metrics": meta["metrics"],
    }
    write_results(str(ROOT / "bench/results/starter.json"), results)
    for key, m in meta["metrics"].items():
        print(key, m)


if __name__ == "__main__":
    main()
