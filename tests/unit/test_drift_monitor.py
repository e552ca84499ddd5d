"""A drift check end to end on real texts (the packaged SMS collection), with embeddings and
scores drawn so that the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.drift.monitor import Reference, check_window, render_html, report_plots
from bastion.training.datasets import load_sms_spam


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    data = load_sms_spam(limit=1500, seed=0)
    return [t for t in data.texts if t.strip()]


def rows(texts: list[str], emb: np.ndarray, spam: np.ndarray) -> list[dict]:
    return [{"ts": float(i), "item_id": f"i{i}", "text": t, "decision": "allow",
             "scores": {"spam": float(s)}, "embedding": e}
            for i, (t, e, s) in enumerate(zip(texts, emb, spam, strict=True))]


def test_no_shift_passes_a_shift_is_caught_and_bad_data_is_named(texts: list[str]) -> None:
    rng = np.random.default_rng(0)
    centre = rng.normal(size=32)
    ref_emb = unit(centre + rng.normal(size=(800, 32)))
    ref = Reference(texts[:800], ref_emb, {"spam": rng.beta(1, 8, 800)}, {"spam": 0.5},
                    model_version="7")
    same = rows(texts[800:1100], unit(centre + rng.normal(size=(300, 32))),
                rng.beta(1, 8, 300))
    report = check_window(ref, same, tenant="acme", n_permutations=400)
    assert not report.drift and report.validation["success"], report.failed
    shifted = rows(texts[800:1100], unit(centre + 2.0 + rng.normal(size=(300, 32))),
                   rng.beta(3, 4, 300))
    report = check_window(ref, shifted, tenant="acme", n_permutations=400)
    assert report.drift
    assert {"embedding_mmd", "score_ks:spam", "flag_rate:spam"} <= set(report.failed)
    broken = [dict(r, text="", scores={"spam": 1.7}) for r in same[:40]] + same[40:]
    report = check_window(ref, broken, tenant="acme", n_permutations=400)
    assert "validation" in report.failed and report.validation["failures"]
    page = render_html(report, report_plots(ref, broken))
    assert "acme" in page and "<img src='data:image/png;base64," in page
    assert report.to_json()["model_version"] == "7"


def test_longer_texts_are_drift_and_psi_is_shown_but_does_not_count(texts: list[str]) -> None:
    rng = np.random.default_rng(1)
    centre = rng.normal(size=32)
    ref = Reference(texts[:800], unit(centre + rng.normal(size=(800, 32))),
                    {"spam": rng.beta(1, 8, 800)}, {"spam": 0.5})
    by_len = sorted(texts[800:], key=len)
    longest = by_len[-250:]  # real texts, only longer: embeddings and scores unchanged
    window = rows(longest, unit(centre + rng.normal(size=(250, 32))), rng.beta(1, 8, 250))
    report = check_window(ref, window, tenant="acme", n_permutations=400)
    assert report.drift and "text_len_ks" in report.failed
    counted = {t["name"]: t["counts"] for t in report.tests}
    assert counted["text_len_ks"] and counted["score_ks:spam"]
    assert counted["score_psi:spam"] is False
    # the event log keeps text_len where the policy keeps no text: lengths still count
    hidden = [dict(r, text=None, text_len=len(r["text"])) for r in window]
    assert "text_len_ks" in check_window(ref, hidden, tenant="acme",
                                         n_permutations=400).failed
    page = render_html(report, report_plots(ref, window))
    assert "shown only" in page and "Flag rates over time" in page


def test_no_shift_windows_pass_at_the_stated_family_rate(texts: list[str]) -> None:
    """The whole family (MMD, lengths, score KS, flag rate, combined) on windows drawn like the
    reference: alarms at about the stated rate, not at the sum of its tests' rates."""
    rng = np.random.default_rng(7)
    centre = rng.normal(size=16)
    pool = texts[:1200]

    def draw(n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        idx = rng.choice(len(pool), size=n, replace=False)
        return ([pool[i] for i in idx], unit(centre + rng.normal(size=(n, 16))),
                rng.beta(1, 8, n))

    ref_t, ref_e, ref_s = draw(600)
    ref = Reference(ref_t, ref_e, {"spam": ref_s}, {"spam": 0.3})
    n_windows, rate = 50, 0.05
    alarms = 0
    for k in range(n_windows):
        t, e, s = draw(100)
        alarms += check_window(ref, rows(t, e, s), tenant="acme", false_alarm_rate=rate,
                               seed=k).drift
    # Binomial(50, 0.05): mean 2.5; more than 8 has probability < 0.002
    assert alarms <= 8, alarms
