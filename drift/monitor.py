"""One drift check: a window of a tenant's traffic against the reference its champion was
trained on, as a report a machine reads (JSON) and one a person reads (HTML with plots).

The window is validated with the reference's great-expectations suite (``drift.validation``)
and tested for drift: MMD on the shared embedding (``drift.mmd``), KS on the text lengths, the
chi-square test of the language mix (``drift.rates``: a new market, a raid in another
language) and, per category, KS on the scores (``drift.univariate``), Fisher's test on the
flag rate (score at or above the block threshold) and, where moderators reviewed items the
champion scored, the precision test (``drift.rates``). The distribution tests of one window
keep the stated false-alarm rate together through their Cauchy combination
(``drift.combine``), weight one half for the embedding test and the other half split evenly
across the others; each test's own flag is at its share of the rate, to name what moved. Each
category's calibrated PSI is reported beside them but does not count (it asks what the score
KS asks).
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from bastion.core.cascade import drift_sample
from bastion.core.language import detect_languages
from bastion.drift.combine import cauchy_combination
from bastion.drift.mmd import MMDDetector
from bastion.drift.rates import flag_rate_test, language_mix_test, precision_test
from bastion.drift.result import DriftResult
from bastion.drift.univariate import ks_test, psi
from bastion.drift.validation import (
    ValidationResult,
    build_suite,
    reference_frame_from_texts,
    validate,
    window_frame,
)

__all__ = ["PLOTS", "Reference", "DriftReport", "check_window", "render_html", "report_plots",
           "window_report"]


@dataclass
class Reference:
    """What the champion was trained on, as the monitor compares against it."""

    texts: list[str]
    embeddings: np.ndarray  # (n, d)
    scores: dict[str, np.ndarray]  # category -> (n,) scores of the champion
    thresholds: dict[str, float]  # category -> block threshold
    model_version: str | None = None
    suite: dict[str, Any] = field(default_factory=dict)
    # For the precision check on reviewed items: the champion's held-out curve and the review
    # threshold (where "flagged" starts) per category.
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    review_thresholds: dict[str, float] = field(default_factory=dict)
    languages: list[str | None] = field(default_factory=list)  # of texts; default: detected

    def __post_init__(self) -> None:
        if not self.languages:
            self.languages = detect_languages(self.texts)
        if not self.suite:
            cats = sorted(self.scores)
            frame = reference_frame_from_texts(
                self.texts, np.stack([self.scores[c] for c in cats], axis=1) if cats else None,
                cats or None)
            self.suite = build_suite(frame, name=f"reference-{self.model_version}",
                                     categories=cats)


@dataclass
class DriftReport:
    tenant: str
    n_window: int
    window_start: float | None
    window_end: float | None
    validation: dict[str, Any]
    tests: list[dict[str, Any]]
    drift: bool
    failed: list[str]
    false_alarm_rate: float
    model_version: str | None
    created_at: float = field(default_factory=time.time)
    # precision on reviewed items fell below held-out (kept apart from distribution drift:
    # trigger rules may treat them differently)
    performance_drop: bool = False
    # "text", or "image" / "audio" for a tenant's media (drift.media: against its window before)
    modality: str = "text"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _text_lengths(rows: list[Mapping[str, Any]]) -> np.ndarray:
    """Each row's text length: the logged one (kept even where the text is not), else the
    text's; NaN where neither is known (the KS test drops it)."""
    out = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        n = r.get("text_len")
        if n is None and isinstance(r.get("text"), str):
            n = len(r["text"])
        try:
            out[i] = float(n) if n is not None else np.nan
        except (TypeError, ValueError):
            pass
    return out


def _window_arrays(rows: list[Mapping[str, Any]], categories: list[str]
                   ) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    # with the cascade, only its random audit share is a sample of the traffic (core.cascade)
    embs = [r["embedding"] for r in rows
            if r.get("embedding") is not None and drift_sample(r.get("reasons") or [])]
    emb = np.stack(embs).astype(np.float32) if embs else None
    scores = {c: np.array([float(r.get("scores", {}).get(c, np.nan)) for r in rows])
              for c in categories}
    return emb, scores


def window_report(tenant: str, rows: Sequence[Mapping[str, Any]], val: ValidationResult,
                  tests: list[dict[str, Any]], drift: bool, drifted: list[str], *,
                  false_alarm_rate: float, model_version: str | None,
                  performance_drop: bool = False, modality: str = "text") -> DriftReport:
    """A window's report: what failed (the combination, each drifted test, validation) and
    the window's span, around its tests and its validation."""
    failed = (["combined"] if drift else []) + drifted
    if not val.success:
        failed.append("validation")
    ts = [float(r["ts"]) for r in rows if r.get("ts") is not None]
    return DriftReport(
        tenant=tenant, n_window=len(rows), window_start=min(ts) if ts else None,
        window_end=max(ts) if ts else None,
        validation={"success": val.success, "failures": val.failures,
                    "suite_version": val.suite_version, "n_rows": val.n_rows},
        tests=tests, drift=drift, failed=failed, false_alarm_rate=false_alarm_rate,
        model_version=model_version, performance_drop=performance_drop, modality=modality)


def check_window(reference: Reference, rows: Iterable[Mapping[str, Any]], *, tenant: str,
                 false_alarm_rate: float = 0.01, n_permutations: int | None = None,
                 seed: int = 0,
                 reviewed: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
                 ) -> DriftReport:
    """Validate and test one window of event-log rows against the reference.

    ``reviewed``: per category, the champion's scores and the moderators' aggregated labels of
    reviewed items; each category with a held-out curve adds a precision test to the family.
    """
    rows = list(rows)
    cats = sorted(reference.scores)
    emb, win_scores = _window_arrays(rows, cats)
    val = validate(window_frame(rows), reference.suite)
    perf = {c: v for c, v in (reviewed or {}).items()
            if c in reference.scores and c in reference.curves}
    # Distribution drift: MMD on the embeddings (weight one half), KS on the text lengths, and
    # per category KS on the scores and Fisher's test on the flag rate (the other half, evenly),
    # combined into one p-value by the Cauchy combination (valid under their dependence), which
    # decides at the stated rate. Each test's own flag uses its weighted Bonferroni share
    # (rate x weight), to name what moved. PSI is shown at its calibrated threshold but does not
    # count: it asks what the score KS asks. Precision on reviewed items is a family of its own
    # (``performance_drop``) at the same rate, split evenly across its categories.
    small = 2 + 2 * len(cats)  # the text length, the language mix, two tests per category
    share = false_alarm_rate / 2 / small
    mmd_p = false_alarm_rate / 2
    results: list[DriftResult] = []
    info: list[DriftResult] = []
    if emb is not None:
        perms = n_permutations or int(np.ceil(2 / mmd_p))
        mmd = MMDDetector(reference.embeddings, p_threshold=mmd_p, n_permutations=perms,
                          seed=seed)
        results.append(mmd.test(emb))
    results.append(ks_test(np.array([len(t) for t in reference.texts], dtype=np.float64),
                           _text_lengths(rows), p_threshold=share, name="text_len_ks"))
    results.append(language_mix_test(reference.languages, [r.get("language") for r in rows],
                                     p_threshold=share))
    precision: list[DriftResult] = []
    for c in cats:
        ref_s, win_s = reference.scores[c], win_scores[c]
        results.append(ks_test(ref_s, win_s, p_threshold=share, name=f"score_ks:{c}"))
        info.append(psi(ref_s, win_s, name=f"score_psi:{c}", false_alarm=share, seed=seed))
        t = reference.thresholds.get(c, 0.5)
        ok = np.isfinite(win_s)
        results.append(flag_rate_test(ref_s >= t, win_s[ok] >= t, p_threshold=share,
                                      name=f"flag_rate:{c}"))
        if c in perf:
            r_scores, r_labels = perf[c]
            precision.append(precision_test(
                r_scores, r_labels, reference.curves[c],
                reference.review_thresholds.get(c, t),
                p_threshold=false_alarm_rate / len(perf), name=f"precision:{c}"))
    usable = [r for r in results if r.p_value is not None]
    weights = np.array([0.5 if r.name == MMDDetector.name else 0.5 / small for r in usable])
    combined_p = (cauchy_combination(np.array([r.p_value for r in usable]), weights)
                  if usable else 1.0)
    drift = combined_p <= false_alarm_rate
    combined = DriftResult(
        "combined", combined_p, combined_p, false_alarm_rate, drift,
        {"method": "Cauchy combination (Liu & Xie 2020)",
         "weights": {r.name: round(float(w / weights.sum()), 4)
                     for r, w in zip(usable, weights, strict=True)}})
    tests = [asdict(r) | {"counts": True} for r in [combined, *results, *precision]] + \
        [asdict(r) | {"counts": False} for r in info]
    return window_report(
        tenant, rows, val, tests, drift, [r.name for r in results + precision if r.drift],
        performance_drop=any(r.drift for r in precision),
        false_alarm_rate=false_alarm_rate, model_version=reference.model_version)


def _histograms(reference: Reference, rows: list[Mapping[str, Any]]) -> str:
    """Score distributions, reference against window, one panel per category (PNG, base64)."""
    cats = sorted(reference.scores)
    if not cats:
        return ""
    _, win = _window_arrays(rows, cats)
    fig = Figure(figsize=(3.2 * len(cats), 2.6))
    axes = fig.subplots(1, len(cats), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax, c in zip(axes[0], cats, strict=True):
        ax.hist(reference.scores[c], bins=bins, density=True, alpha=0.5, label="reference")
        w = win[c][np.isfinite(win[c])]
        ax.hist(w, bins=bins, density=True, alpha=0.5, label="window")
        ax.axvline(reference.thresholds.get(c, 0.5), color="k", lw=0.8, ls="--")
        ax.set_title(c, fontsize=9)
    axes[0][0].legend(fontsize=7)
    return _png(fig)


def _png(fig: Figure) -> str:
    """The figure as a base64 PNG (matplotlib's object API: no pyplot state, no GUI backend)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return base64.b64encode(buf.getvalue()).decode()


def _flag_rates_over_time(reference: Reference, rows: list[Mapping[str, Any]],
                          n_bins: int = 12) -> str:
    """Each category's flag rate (score >= block threshold) in equal time slices of the
    window, against the reference's rate (dashed) (PNG, base64)."""
    cats = sorted(reference.scores)
    ts = np.array([float(r["ts"]) if r.get("ts") is not None else np.nan for r in rows])
    ok_ts = np.isfinite(ts)
    if not cats or ok_ts.sum() < 2 or np.ptp(ts[ok_ts]) <= 0:
        return ""
    _, win = _window_arrays(rows, cats)
    edges = np.linspace(ts[ok_ts].min(), ts[ok_ts].max(), n_bins + 1)
    slot = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, n_bins - 1)
    mids = (edges[:-1] + edges[1:]) / 2
    hours = (mids - edges[-1]) / 3600.0
    fig = Figure(figsize=(6.4, 2.8))
    ax = fig.subplots()
    for k, c in enumerate(cats):
        t = reference.thresholds.get(c, 0.5)
        rates = []
        for b in range(n_bins):
            sel = ok_ts & (slot == b) & np.isfinite(win[c])
            rates.append(float((win[c][sel] >= t).mean()) if sel.any() else np.nan)
        color = f"C{k % 10}"
        ax.plot(hours, rates, marker="o", ms=3, color=color, label=c)
        ax.axhline(float((reference.scores[c] >= t).mean()), color=color, ls="--", lw=0.8)
    ax.set_xlabel("hours before the window's end")
    ax.set_ylabel("flag rate")
    ax.legend(fontsize=7, ncol=min(len(cats), 4))
    return _png(fig)


#: The plots of a drift report, by the name of their PNG artifact (``drift/<stem>-<name>.png``).
PLOTS = ("scores", "flag_rates")


def report_plots(reference: Reference, rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The report's plots as base64 PNGs: score histograms (reference against window) and
    flag rates over time; a plot the window cannot draw is left out."""
    rows = list(rows)
    plots = {"scores": _histograms(reference, rows),
             "flag_rates": _flag_rates_over_time(reference, rows)}
    return {k: v for k, v in plots.items() if v}


def render_html(report: DriftReport, plots: Mapping[str, str]) -> str:
    """A self-contained HTML page: verdict, failed checks, every test, the plots."""
    esc = html.escape
    png = plots.get("scores", "")
    rates_png = plots.get("flag_rates", "")
    verdict = ("DRIFT" if report.drift else "PRECISION DROP" if report.performance_drop
               else "INVALID DATA" if "validation" in report.failed else "no drift")
    def test_row(t: dict[str, Any]) -> str:
        p = "" if t["p_value"] is None else f"{t['p_value']:.3g}"
        flag = ("yes" if t["drift"] else "") if t.get("counts", True) else \
            ("(yes, shown only)" if t["drift"] else "(shown only)")
        return (f"<tr><td>{esc(t['name'])}</td><td>{t['statistic']:.4g}</td><td>{p}</td>"
                f"<td>{t['threshold']:.3g}</td><td>{flag}</td></tr>")

    rows_html = "".join(test_row(t) for t in report.tests)
    fails = "".join(
        f"<li>{esc(str(f.get('expectation')))} on {esc(str(f.get('column')))}: "
        f"{f.get('unexpected_count')} unexpected</li>" for f in report.validation["failures"])
    return (
        "<!doctype html><meta charset=utf-8><title>Bastion drift report</title>"
        f"<h1>{esc(report.tenant)}: {verdict}</h1>"
        f"<p>{report.n_window} items; model version {esc(str(report.model_version))}; "
        f"family false-alarm rate {report.false_alarm_rate}</p>"
        f"<h2>Failed</h2><p>{esc(', '.join(report.failed) or 'nothing')}</p>"
        f"<h2>Data validation</h2><ul>{fails or '<li>all expectations met</li>'}</ul>"
        "<h2>Tests</h2><table border=1 cellpadding=3><tr><th>test</th><th>statistic</th>"
        f"<th>p</th><th>threshold</th><th>drift</th></tr>{rows_html}</table>"
        + (f"<h2>Scores</h2><img src='data:image/png;base64,{png}'>" if png else "")
        + (f"<h2>Flag rates over time</h2><p>dashed: the reference's rate</p>"
           f"<img src='data:image/png;base64,{rates_png}'>" if rates_png else ""))
