"""The cascade against the transformer alone, in process, on real traffic.

"Real traffic" here: held-out items (the starter's test split, which neither stage trained
or calibrated on) of every labelled source on this machine (SMS ham/spam, SpamAssassin mail,
Davidson and MLMA tweets, Civil Comments (Toxic Spans), ToxiGen sentences, Reddit C-SSRS
posts, PyRIT LLM responses), drawn so that ``--benign-share`` (default 0.9) of them are
items no human labelled harmful for any category, the rest items labelled harmful for at
least one, each part in proportion to the sources' test sizes. Why 0.9: the sources
themselves are built to be harmful-heavy (Davidson is 77% offensive); live moderation traffic
is mostly benign (Civil Comments, sampled from a real comment stream, is ~8% toxic), so 0.9
is a conservative middle, and the benchmark prints the first stage's share so other mixes
can be judged.

Measured: items/s of the full model (encoder + heads, ``ModerationModel.score``) and of the
cascade (``ModerationModel.score_cascade``, audit share included), each over the same items
in arrival order, after a warm-up; the first stage's share; per head, how many of the items
the full model flags (at the first stage's flag levels) the cascade allows; the AUROC per
category of the cascade's scores next to the full model's on the labelled traffic items;
and the held-out report saved in the artifact (``metadata.json`` ``cascade``).

Run: ``.venv/bin/python bench/cascade.py [--items N] [--threads T]`` (needs the development
data and a starter artifact with a first stage; ``bastion starter cascade`` adds one).
Writes bench/results/cascade.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bastion.core.cascade import Stage, cascade_status  # noqa: E402
from bastion.core.model import ModerationModel  # noqa: E402
from bastion.registry.evaluation import binary_metrics  # noqa: E402
from bastion.training.datasets import load_starter_data  # noqa: E402
from bastion.training.starter import SHIPPED_DIR, artifact_digest, split_masks  # noqa: E402
from bench._traffic import machine, write_results  # noqa: E402


def traffic(n: int, benign_share: float, seed: int) -> tuple[Any, dict[str, Any]]:
    """The held-out items of the mix (see the module docstring), in a random arrival order."""
    data = load_starter_data()
    test = np.flatnonzero(split_masks(data.groups)[2])
    harmful = ((data.targets >= 0.5) & data.mask).any(axis=1)[test]
    rng = np.random.default_rng(seed)
    n_benign = int(round(n * benign_share))
    pick = np.concatenate([
        rng.choice(test[~harmful], min(n_benign, int((~harmful).sum())), replace=False),
        rng.choice(test[harmful], min(n - n_benign, int(harmful.sum())), replace=False)])
    rng.shuffle(pick)
    part = data.subset(pick)
    srcs, counts = np.unique(part.sources, return_counts=True)
    return part, {"n_items": len(pick), "benign_share": benign_share, "seed": seed,
                  "split": "starter test split (held out from both stages)",
                  "sources": {str(s): int(c) for s, c in zip(srcs, counts, strict=True)}}


def _rate(fn: Any, texts: list[str]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(texts)
    return len(texts) / (time.perf_counter() - t0), out


def _auroc(part: Any, keys: list[str], scores: np.ndarray) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for j, key in enumerate(keys):
        c = part.categories.index(key)
        known = part.mask[:, c]
        y = (part.targets[known, c] >= 0.5).astype(np.float64)
        ok = 10 <= y.sum() <= len(y) - 10
        out[key] = round(float(binary_metrics(y, scores[known, j].astype(np.float64))["auroc"]),
                         4) if ok else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--benign-share", type=float, default=0.9)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench/results/cascade.json"))
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model = ModerationModel.load(SHIPPED_DIR)
    stage = model.first_stage
    if stage is None:
        sys.exit(f"{SHIPPED_DIR} has no first stage; run 'bastion starter cascade'")
    part, mix = traffic(args.items, args.benign_share, args.seed)
    texts = part.texts
    model.score(texts[:64], args.batch_size)  # warm-up: first calls allocate
    model.score_cascade(texts[:64], batch_size=args.batch_size)
    full_rate, (_, full) = _rate(lambda t: model.score(t, args.batch_size), texts)
    rng = np.random.default_rng(args.seed)
    casc_rate, (_, casc, stages) = _rate(
        lambda t: model.score_cascade(t, rng, args.batch_size), texts)
    t0 = time.perf_counter()
    stage.probabilities(texts)
    first_rate = len(texts) / (time.perf_counter() - t0)
    keys = model.head_keys
    first = stages == Stage.first
    per_key = {}
    for j, key in enumerate(keys):
        flagged = full[:, j] >= stage.flag_levels[stage.keys.index(key)]
        per_key[key] = {"n_flagged": int(flagged.sum()), "allowed_by_first_stage":
                        int((flagged & first).sum())}
    any_flag = np.any(full >= stage.flag_levels[[stage.keys.index(k) for k in keys]], axis=1)
    full_auroc, casc_auroc = _auroc(part, keys, full), _auroc(part, keys, casc)
    results = {
        "benchmark": "cascade", "machine": machine(), "artifact": artifact_digest(),
        "traffic": mix, "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "items_per_s": {"full_model": round(full_rate, 1), "cascade": round(casc_rate, 1),
                        "first_stage_alone": round(first_rate, 1)},
        "speedup": round(casc_rate / full_rate, 2),
        "stages": {s.name: int((stages == s).sum()) for s in Stage},
        "first_stage_share": round(float(first.mean()), 4),
        "decision_agreement": round(float(1 - (first & any_flag).mean()), 5),
        "per_key": per_key,
        "auroc_on_traffic": {k: {"full": full_auroc[k], "cascade": casc_auroc[k],
                                 "delta": None if full_auroc[k] is None or casc_auroc[k] is None
                                 else round(casc_auroc[k] - full_auroc[k], 4)}  # type: ignore[operator]
                             for k in keys},
        "heldout_report": model.metadata.get("cascade", {}).get("report"),
        "heldout_summary": cascade_status(model.metadata.get("cascade")),
        "command": " ".join(["python", *sys.argv]),
    }
    write_results(args.out, results)
    print(f"full model {full_rate:.1f} items/s, cascade {casc_rate:.1f} items/s "
          f"({results['speedup']}x); first stage decides {first.mean():.1%}; "
          f"agreement {results['decision_agreement']:.3%}")


if __name__ == "__main__":
    main()
