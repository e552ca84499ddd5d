"""The gate's report: one :class:`Check` per rule and (tenant, category), and the
:class:`GateReport` a person reads (verdict line, table, JSON) and the registry stores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AGREEMENT",
    "AUROC",
    "CALIBRATION",
    "CATEGORY_PRESENT",
    "EVIDENCE",
    "LATENCY",
    "PRECISION",
    "QUALITY",
    "RECALL",
    "Check",
    "GateReport",
]

# The checks' names, as reports and the registry's version tags carry them.
CATEGORY_PRESENT = "category_present"
PRECISION = "precision_at_block"
RECALL = "recall_vs_champion"
CALIBRATION = "calibration_ece"
AUROC = "auroc_vs_champion"
AGREEMENT = "agreement_with_champion"
EVIDENCE = "quality_evidence"
LATENCY = "p99_latency"
QUALITY = (PRECISION, RECALL, CALIBRATION, AUROC)  # what counts as evidence of quality


@dataclass(frozen=True)
class Check:
    """One check of the gate. ``passed`` is None when it could not be measured."""

    tenant: str | None  # None for version-wide checks (latency)
    category: str | None
    name: str
    passed: bool | None
    value: float | None
    threshold: float | None
    message: str


def measured(checks: Sequence[Check]) -> bool:
    """Whether any quality check was measured. Neither a present head nor the latency says
    anything about the quality of decisions, so they never count."""
    return any(c.passed is not None and c.name in QUALITY for c in checks)


def fmt(value: float | None) -> str:
    """A check's value or threshold as reports print it: 4 decimals at most, "-" for none."""
    return "-" if value is None else f"{round(value, 4):g}"


def _where(check: Check) -> str:
    if check.tenant is None:
        return check.name
    return f"{check.tenant}/{check.category}"


def _result(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "n/a"}[passed]


@dataclass(frozen=True)
class GateReport:
    """The gate's verdict on a candidate, with every check behind it."""

    candidate: str
    champion: str | None
    passed: bool  # no check failed, and a quality check was measured (or see registry.gate)
    checks: list[Check]

    def failures(self) -> list[Check]:
        """The checks that failed, in report order."""
        return [c for c in self.checks if c.passed is False]

    def verdict(self) -> str:
        """One line: passed or rejected, and each failing (tenant, category) or check."""
        vs = f" vs champion v{self.champion}" if self.champion else " (no champion)"
        failed = self.failures()
        if failed:
            where = ", ".join(dict.fromkeys(_where(c) for c in failed))
            return f"REJECTED v{self.candidate}{vs}: {len(failed)} check(s) failed in {where}"
        if not self.passed and not measured(self.checks):
            return (
                f"REJECTED v{self.candidate}{vs}: no quality check was measurable; label more "
                "held-out items (see min_positives)"
            )
        if not self.passed:  # built by hand with passed=False and no failing check
            return f"REJECTED v{self.candidate}{vs}"
        ok = sum(c.passed is True for c in self.checks)
        skipped = sum(c.passed is None for c in self.checks)
        line = f"PASSED v{self.candidate}{vs}: {ok} check(s) passed, {skipped} not measurable"
        if not measured(self.checks):  # registry.gate._adds_review_only
            line += ("; no quality check was measurable: the champion's scores unchanged, plus "
                     "new review-only categories")
        return line

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict with stable keys; values rounded to 4 decimals."""
        return {
            "candidate": self.candidate,
            "champion": self.champion,
            "passed": self.passed,
            "verdict": self.verdict(),
            "checks": [
                {
                    "tenant": c.tenant,
                    "category": c.category,
                    "name": c.name,
                    "passed": c.passed,
                    "value": None if c.value is None else round(float(c.value), 4),
                    "threshold": None if c.threshold is None else round(float(c.threshold), 4),
                    "message": c.message,
                }
                for c in self.checks
            ],
        }

    def to_table(self) -> str:
        """A plain-text table: verdict line first, failures first, then why each failed."""
        checks = sorted(self.checks, key=lambda c: c.passed is not False)  # stable sort
        header = ("tenant", "category", "check", "value", "threshold", "result")
        rows = [header] + [
            (c.tenant or "-", c.category or "-", c.name, fmt(c.value),
             fmt(c.threshold), _result(c.passed))
            for c in checks
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [self.verdict(), ""]
        for r in rows:
            cells = (cell.ljust(w) for cell, w in zip(r, widths, strict=True))
            lines.append("  ".join(cells).rstrip())
        failed = self.failures()
        if failed:
            lines += ["", "Failures:"] + [f"  - {c.message}" for c in failed]
        unmeasured = [c for c in self.checks if c.passed is None]
        if unmeasured:
            lines += ["", "Not measurable:"] + [f"  - {c.message}" for c in unmeasured]
        return "\n".join(lines).rstrip() + "\n"
