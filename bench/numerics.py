"""Encoder numerics on this machine: items/s in process for each numerics the CPU can run, at
batch 1, 8, 32 and 64 on real tweets; the starter heads' held-out AUROC per category with each,
as a difference to fp32; and what ``auto`` picks. With ``--avx2`` it runs itself again under
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``, which emulates an AVX2-only CPU (no
AVX-512, no native bf16 or VNNI kernels) on this one: an emulation, not that machine.

Run: ``.venv/bin/python bench/numerics.py [--texts 512] [--heldout all] [--avx2]`` (the whole
held-out split is ~13,000 texts: tens of minutes per numerics on two cores; ``--heldout 1000``
for a quick look). Writes bench/results/numerics.json, summarised in docs/benchmarks.md
(Numerics).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bastion.core.encoders import create_encoder  # noqa: E402
from bastion.core.numerics import create_numerics, numerics_names  # noqa: E402
from bench._traffic import machine, real_texts, write_results  # noqa: E402

BATCHES = (1, 8, 32, 64)
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _speed(encoder: Any, texts: list[str]) -> dict[str, float]:
    """Items/s per batch size (batch 1 on a quarter of the texts: it is the slow case)."""
    out = {}
    encoder.encode(texts[:8], batch_size=8)  # first call allocates
    for b in BATCHES:
        part = texts[: max(len(texts) // 4, 8)] if b == 1 else texts
        t0 = time.perf_counter()
        encoder.encode(part, batch_size=b)
        out[str(b)] = round(len(part) / (time.perf_counter() - t0), 1)
    return out


def measure(n_texts: int, heldout: int | None) -> dict[str, Any]:
    import torch

    texts, source = real_texts(n_texts)
    res: dict[str, Any] = {"machine": machine(), "texts": {"n": n_texts, "source": source},
                           "isa_env": {k: os.environ.get(k) for k in AVX2_ENV},
                           "items_per_s": {}, "unavailable": {}}
    names = [n for n in numerics_names() if create_numerics(n).available() is None]
    res["unavailable"] = {n: create_numerics(n).available() for n in numerics_names()
                          if n not in names}
    for name in names:
        enc = create_encoder("minilm", precision=name)
        res["items_per_s"][name] = _speed(enc, texts)
        print(name, res["items_per_s"][name], flush=True)
        del enc
    fp32 = res["items_per_s"]["fp32"]
    res["speedup_vs_fp32"] = {n: {b: round(v[b] / fp32[b], 2) for b in v}
                              for n, v in res["items_per_s"].items()}
    t0 = time.perf_counter()
    auto = create_encoder("minilm", precision="auto")  # no cache: measure now
    res["auto"] = auto.numerics | {"load_seconds": round(time.perf_counter() - t0, 1)}
    print("auto picks", auto.precision, flush=True)
    del auto
    if heldout != 0:
        from bastion.training.datasets import dev_data_dir
        from bastion.training.numerics_check import (
            MAX_AUROC_DROP,
            auroc_by_category,
            held_out,
            load_starter,
        )

        if dev_data_dir() is None:
            res["auroc"] = {"note": "no development data here: no held-out split"}
        else:
            split = held_out(heldout)
            auroc = {n: auroc_by_category(load_starter(n), split) for n in names}
            res["auroc"] = {
                "items": len(split.data.texts), "split_items": split.n_split,
                "tolerance": MAX_AUROC_DROP, "fp32": auroc["fp32"],
                "delta_vs_fp32": {n: {k: round(a[k] - auroc["fp32"][k], 4) for k in a}
                                  for n, a in auroc.items() if n != "fp32"},
            }
            res["auroc"]["within_tolerance"] = {
                n: all(abs(v) <= MAX_AUROC_DROP for v in d.values())
                for n, d in res["auroc"]["delta_vs_fp32"].items()}
            print("AUROC deltas", res["auroc"]["delta_vs_fp32"], flush=True)
    res["torch_threads"] = torch.get_num_threads()
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=512, help="real tweets timed per batch")
    parser.add_argument("--heldout", default="all",
                        help="held-out items for the AUROC check: a number, all, or 0 (skip)")
    parser.add_argument("--avx2", action="store_true",
                        help="also run under the AVX2 emulation (a second process)")
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)  # the child's output
    args = parser.parse_args()
    heldout = None if args.heldout == "all" else int(args.heldout)
    res = measure(args.texts, heldout)
    if args.json is not None:
        args.json.write_text(json.dumps(res))
        return
    results: dict[str, Any] = {"benchmark": "numerics", **res}
    if args.avx2:
        out = ROOT / "bench/results/.numerics-avx2.json"
        subprocess.run([sys.executable, __file__, "--texts", str(args.texts), "--heldout",
                        args.heldout, "--json", str(out)], env=os.environ | AVX2_ENV,
                       check=True)
        results["avx2_emulated"] = json.loads(out.read_text())
        out.unlink()
    write_results(str(ROOT / "bench/results/numerics.json"), results)


if __name__ == "__main__":
    main()
