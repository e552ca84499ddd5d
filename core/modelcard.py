"""A model version's metadata in words: the lines ``bastion models show``, ``bastion starter
show`` and ``bastion starter build`` print per category."""

from __future__ import annotations

from typing import Any

from bastion.core.model import ModelMetadata

__all__ = ["category_lines", "format_ci", "format_metric"]


def format_ci(v: Any) -> str:
    return f"[{v[0]:.2f}, {v[1]:.2f}]" if isinstance(v, (list, tuple)) and len(v) == 2 else ""


def format_metric(m: dict[str, Any], name: str) -> str:
    if name not in m:
        return "—"
    return f"{m[name]:.3f} {format_ci(m.get(name + '_ci'))}".strip()


def category_lines(meta: ModelMetadata) -> list[str]:
    """One line per category: pooled AUROC with its interval and positives; thin ones say so."""
    out = []
    for key in meta.get("categories", []):
        m = meta.get("metrics", {}).get(key, {}).get("all", {})
        thin = meta.get("thin", {}).get(key)
        auroc = format_metric(m, "auroc")
        weak = meta.get("weak", {}).get(key)
        out.append(f"{key:<11} AUROC {auroc} on {m.get('n', 0)} held-out items "
                   f"({m.get('n_pos', 0)} positives)" + (f"; THIN: {thin}" if thin else "")
                   + (f"; WEAK: {weak}" if weak else ""))
    for key, why in meta.get("thin", {}).items():
        if key not in meta.get("categories", []):
            out.append(f"{key:<11} {why}")
    return out
