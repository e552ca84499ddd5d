"""Plain cases: harmful messages that must come back ``review`` or ``block`` under a policy,
and benign look-alikes ("this traffic is murder") that must come back ``allow``.

The suite lives in ``tests/behaviour/plain_cases.yaml``; the behavioural test and
``bench/starter.py`` both run it through :func:`run_cases`, which decides each text exactly
as serving does (``core.decision``), once with the tenant's keyword rules and once with the
model alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bastion.core.decision import decide, resolve_policy
from bastion.core.model import ModerationModel
from bastion.core.policy import PolicySet

__all__ = ["CASES_FILE", "PlainCase", "load_cases", "run_cases"]

CASES_FILE = Path(__file__).resolve().parents[1] / "tests/behaviour/plain_cases.yaml"


@dataclass(frozen=True)
class PlainCase:
    kind: str  # "harmful" | "lookalike"
    category: str
    text: str

    @property
    def expected(self) -> set[str]:
        return {"review", "block"} if self.kind == "harmful" else {"allow"}


def load_cases(path: Path = CASES_FILE) -> list[PlainCase]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [PlainCase(kind, c["category"], c["text"])
            for kind in ("harmful", "lookalike") for c in data[kind]]


def run_cases(model: ModerationModel, policy: PolicySet, tenant: str = "demo",
              cases: list[PlainCase] | None = None) -> dict[str, Any]:
    """Per kind: how many cases came back as expected, with and without keyword rules, and
    the misses (text, decision, scores)."""
    cases = cases if cases is not None else load_cases()
    meta = model.metadata
    resolved = resolve_policy(policy, model.head_keys, meta)[tenant]
    bare = resolve_policy(policy.model_copy(update={"tenants": {tenant: policy.tenants[
        tenant].model_copy(update={"keywords": ()})}}), model.head_keys, meta)[tenant]
    _, scores = model.score([c.text for c in cases])
    out: dict[str, Any] = {}
    for kind in ("harmful", "lookalike"):
        out[kind] = {"n": 0, "ok": 0, "ok_model_only": 0, "misses": [], "misses_model_only": []}
    for case, row in zip(cases, scores, strict=True):
        r = out[case.kind]
        full = decide(resolved, case.text, row)
        alone = decide(bare, case.text, row)
        r["n"] += 1
        miss = {"text": case.text, "category": case.category, "scores": full["scores"]}
        if full["decision"] in case.expected:
            r["ok"] += 1
        else:
            r["misses"].append({**miss, "decision": full["decision"]})
        if alone["decision"] in case.expected:
            r["ok_model_only"] += 1
        else:
            r["misses_model_only"].append({**miss, "decision": alone["decision"]})
    return out
