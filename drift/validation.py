"""Data validation of event-log windows with great-expectations, before any drift statistics.

A window of a tenant's decisions becomes a frame (:func:`window_frame`); an expectation suite
derived from the champion's training reference (:func:`build_suite`, a plain GX JSON dict that
is versioned and stored with the model) says what well-formed traffic looks like: required
fields present, scores in [0, 1], known decisions, text lengths and character-set mix within the
reference's range. :func:`validate` runs the suite with real great-expectations and never raises
on bad data: a malformed window is a failed validation that lists what failed, with examples.

Learned ranges must hold for a ``mostly`` share of rows (0.99): at n rows they tolerate
``floor(0.01 n)`` unusual messages, so windows should hold a few hundred rows; below 100 rows a
single legitimate outlier (a message that is just ":)") fails them.

GX is imported lazily (the import takes seconds) and runs in an in-memory context with
analytics off: nothing is written to disk or sent anywhere.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["DECISIONS", "ValidationResult", "build_suite", "gx_module", "quantile_range",
           "reference_frame_from_texts", "suite_version", "validate", "window_frame"]

DECISIONS = ["block", "review", "allow"]
_SHARES = ["letters_share", "non_ascii_share", "digit_share"]
_BASE_COLUMNS = ["ts", "item_id", "decision", "has_session_id", "has_user_id", "text",
                 "has_text", "empty_text", "text_len", *_SHARES, "url_count", "max_score"]
_URL = re.compile(r"(?i)\b(?:https?://|www\.)\S+")
# C0 controls other than tab/newline/carriage return, C1 controls and U+FFFD (what a UTF-8
# decode with errors="replace" leaves): the marks of binary content sent as text.
_GARBLE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]"
_LETTER = r"[^\W\d_]"
# A share range of a degenerate reference (say, no digits at all) is widened as if it spanned
# at least this much, so that one digit in a window is not a failure.
_MIN_SPREAD = 0.1
_SAMPLE, _SAMPLE_CHARS = 5, 80  # unexpected values reported per failure, characters per text
_OBSERVED = ["unexpected_count", "unexpected_percent", "element_count", "missing_count",
             "observed_value"]


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of one suite on one window.

    Attributes:
        success: Every expectation passed.
        n_rows: Rows in the validated frame.
        failures: The failed entries of ``checks``.
        checks: One dict per expectation, in suite order: ``expectation`` (GX type),
            ``column``, ``kwargs``, ``success``, ``unexpected_count``, ``unexpected_percent``,
            ``element_count``, ``missing_count``, ``observed_value`` (aggregate expectations),
            ``sample`` (up to 5 unexpected values, texts cut to 80 characters), ``item_ids`` of
            those rows and ``error`` (why it could not run, e.g. a missing column).
        suite_version: ``sha256[:12]`` of the suite's canonical JSON.
    """

    success: bool
    n_rows: int
    failures: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    suite_version: str


@functools.cache
def gx_module() -> ModuleType:
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # offline: no usage statistics, ever
    with warnings.catch_warnings():
        # Import-time noise: google-api-core (GX's optional BigQuery/GCS backends) warns that
        # grpcio-status is missing (ImportWarning); GX imports the deprecated sre_constants.
        warnings.simplefilter("ignore", ImportWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # on first use: GX takes seconds to import, and must see the settings above first
        import great_expectations as gx
    return gx


def suite_version(suite: Mapping[str, Any]) -> str:
    """``sha256[:12]`` of the suite's canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(suite, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _text_of(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):  # keep binary visible as replacement characters
        return bytes(value).decode("utf-8", errors="replace")
    return None if isinstance(value, float) and math.isnan(value) else str(value)


def _float_of(value: Any) -> float:
    try:
        return math.nan if isinstance(value, bool) or value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _int_of(value: Any) -> int | None:
    f = _float_of(value)
    return int(f) if math.isfinite(f) and f == int(f) else None


def _id_of(value: Any) -> str | None:
    text = _text_of(value)
    return text if text and text.strip() else None


def _scores_of(value: Any) -> dict[str, float]:
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return {str(k): _float_of(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def _row(raw: Any) -> dict[str, Any]:
    rec = raw if isinstance(raw, Mapping) else {}  # a non-mapping row: every field missing
    text = _text_of(rec.get("text"))
    text_len = _int_of(rec.get("text_len"))
    if text_len is None and text is not None:
        text_len = len(text)
    scores = _scores_of(rec.get("scores"))
    finite = [s for s in scores.values() if not math.isnan(s)]
    row: dict[str, Any] = {
        "ts": _float_of(rec.get("ts")), "item_id": _id_of(rec.get("item_id")),
        "decision": _text_of(rec.get("decision")),
        "has_session_id": _id_of(rec.get("session_id")) is not None,
        "has_user_id": _id_of(rec.get("user_id")) is not None,
        "text": text, "has_text": text is not None,
        "empty_text": text.strip() == "" if text is not None else text_len == 0,
        "text_len": text_len, "max_score": max(finite) if finite else math.nan,
    }
    if text:
        n = len(text)
        row["letters_share"] = sum(c.isalpha() for c in text) / n
        row["non_ascii_share"] = sum(ord(c) > 127 for c in text) / n
        row["digit_share"] = sum(c.isdigit() for c in text) / n
        row["url_count"] = len(_URL.findall(text))
    else:  # no text kept (hashed-only tenant) or empty: the mix is unknown, not zero
        row.update(dict.fromkeys(_SHARES, math.nan), url_count=None)
    row.update({f"score_{k}": v for k, v in scores.items()})
    return row


def window_frame(rows: Iterable[Any]) -> pd.DataFrame:
    """Event-log rows (as :meth:`core.events.EventLog.read` yields them) -> one row per decision.

    Never raises on a malformed row: what is wrong stays in the frame for an expectation to
    catch (a missing or blank ``item_id`` is null, a non-numeric score is NaN, binary text keeps
    its replacement characters, an unknown decision is kept as written).

    Args:
        rows: Decision records; anything that is not a mapping counts as a row with no fields.

    Returns:
        Columns ``ts``, ``item_id``, ``decision``, ``has_session_id``, ``has_user_id``, ``text``
        (None where the tenant keeps no raw text), ``has_text``, ``empty_text``, ``text_len``
        (the logged length, else ``len(text)``; nullable int), ``letters_share``,
        ``non_ascii_share``, ``digit_share`` (shares of the text's characters; NaN without
        text), ``url_count``, ``max_score`` and ``score_<category>`` per category seen.
    """
    records = [_row(r) for r in rows]
    score_cols = sorted({k for r in records for k in r if k.startswith("score_")})
    columns = {c: [r.get(c) for r in records] for c in _BASE_COLUMNS + score_cols}
    frame = pd.DataFrame(columns, dtype=object)  # object: str columns stay str/None (pandas 3)
    for col in ["ts", *_SHARES, "max_score", *score_cols]:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    for col in ["text_len", "url_count"]:
        frame[col] = pd.array(columns[col], dtype="Int64")
    for col in ["has_session_id", "has_user_id", "has_text", "empty_text"]:
        frame[col] = frame[col].astype(bool)
    return frame


def reference_frame_from_texts(
    texts: list[str], scores: np.ndarray | None = None, categories: list[str] | None = None
) -> pd.DataFrame:
    """The training reference as a frame with :func:`window_frame`'s columns.

    ``item_id`` is ``reference:<i>``; ``ts`` and ``decision`` stay null (content, not decisions).

    Args:
        texts: The training texts.
        scores: Optional ``(len(texts), len(categories))`` model scores on them.
        categories: Column names of ``scores``.

    Raises:
        ValueError: ``scores`` without ``categories`` or with a different shape.
    """
    rows: list[dict[str, Any]] = [
        {"item_id": f"reference:{i}", "text": t, "text_len": len(t)} for i, t in enumerate(texts)
    ]
    if scores is not None:
        arr = np.asarray(scores, dtype=np.float64)
        if categories is None or arr.shape != (len(texts), len(categories)):
            raise ValueError(f"reference scores of shape {arr.shape} need categories naming "
                             f"their columns and one row per text ({len(texts)} texts, "
                             f"categories={categories})")
        for row, values in zip(rows, arr, strict=True):
            row["scores"] = dict(zip(categories, values.tolist(), strict=True))
    return window_frame(rows)


def quantile_range(frame: pd.DataFrame, col: str, q: float) -> tuple[float, float] | None:
    if col not in frame:
        return None
    v = pd.to_numeric(frame[col], errors="coerce").astype("float64").dropna()
    return None if v.empty else (float(v.quantile(q)), float(v.quantile(1 - q)))


def _share_mostly(share_ok: float, mostly: float, slack: float) -> float:
    # The reference's own share of conforming rows, loosened by `slack` of its shortfall.
    return math.floor(min(mostly, share_ok - slack * (1 - share_ok)) * 1000) / 1000


def build_suite(
    reference: pd.DataFrame, *, name: str, categories: list[str], quantile: float = 0.001,
    slack: float = 0.25, mostly: float = 0.99,
) -> dict[str, Any]:
    """Derive an expectation suite, as GX's JSON dict, from a training reference frame.

    Structural expectations hold exactly (required fields not null, types, scores in [0, 1],
    decisions in :data:`DECISIONS`, at least one row). Expectations learned from the reference
    (text length, character-set mix, URLs, letters, binary marks, empty texts) are per-row
    ranges between its ``quantile`` and ``1 - quantile`` widened by ``slack`` that must hold for
    a ``mostly`` share of rows: exact bounds would fail on the first odd but legitimate message.

    Args:
        reference: Frame from :func:`reference_frame_from_texts` or :func:`window_frame`.
        name: The suite's name (e.g. ``<tenant>-<model version>``).
        categories: Score categories every window must carry.
        quantile: Tail share left out of each learned range on either side.
        slack: Widening of learned ranges: lengths by this factor, shares by this fraction of
            their spread.
        mostly: Share of rows that must satisfy a learned range.

    Returns:
        ``ExpectationSuite.to_json_dict()``; ``meta["bastion"]`` records how it was derived.

    Raises:
        ValueError: An empty reference or parameters out of range.
    """
    if len(reference) == 0:
        raise ValueError("build_suite: the reference frame is empty; pass the training texts")
    if not (0 <= quantile < 0.5 and slack >= 0 and 0 < mostly <= 1):
        raise ValueError(f"build_suite: need 0 <= quantile < 0.5, slack >= 0, 0 < mostly <= 1;"
                         f" got quantile={quantile}, slack={slack}, mostly={mostly}")
    gx = gx_module()
    E = gx.expectations
    scores = [f"score_{c}" for c in categories]
    exps: list[Any] = [E.ExpectTableRowCountToBeBetween(min_value=1)]
    exps += [E.ExpectColumnValuesToNotBeNull(column=c)
             for c in ["item_id", "decision", "text_len", *scores]]
    types = {"item_id": "str", "decision": "str", "text": "str", "text_len": "int64",
             "has_text": "bool", "empty_text": "bool",
             **dict.fromkeys([*_SHARES, "max_score", *scores], "float64")}
    exps += [E.ExpectColumnValuesToBeOfType(column=c, type_=t) for c, t in types.items()]
    exps.append(E.ExpectColumnValuesToBeInSet(column="decision", value_set=list(DECISIONS)))
    exps += [E.ExpectColumnValuesToBeBetween(column=c, min_value=0.0, max_value=1.0)
             for c in [*scores, "max_score"]]

    lengths = quantile_range(reference, "text_len", quantile)
    if lengths is not None:
        lo, hi = math.floor(lengths[0] * (1 - slack)), math.ceil(lengths[1] * (1 + slack))
        exps.append(E.ExpectColumnValuesToBeBetween(
            column="text_len", min_value=lo, max_value=hi, mostly=mostly))
        exps.append(E.ExpectColumnValueLengthsToBeBetween(
            column="text", min_value=lo, max_value=hi, mostly=mostly))
    for col in _SHARES:
        if (q := quantile_range(reference, col, quantile)) is not None:
            pad = slack * max(q[1] - q[0], _MIN_SPREAD)
            exps.append(E.ExpectColumnValuesToBeBetween(
                column=col, min_value=round(max(0.0, q[0] - pad), 6),
                max_value=round(min(1.0, q[1] + pad), 6), mostly=mostly))
    if (urls := quantile_range(reference, "url_count", quantile)) is not None:
        exps.append(E.ExpectColumnValuesToBeBetween(
            column="url_count", min_value=0, max_value=max(1, math.ceil(urls[1] * (1 + slack))),
            mostly=mostly))
    texts = reference["text"].dropna().astype(str) if "text" in reference else pd.Series()
    if len(texts):
        has_letter = float(texts.str.contains(_LETTER).mean())
        clean = float(1 - texts.str.contains(_GARBLE).mean())
        exps.append(E.ExpectColumnValuesToMatchRegex(
            column="text", regex=_LETTER, mostly=_share_mostly(has_letter, mostly, slack)))
        exps.append(E.ExpectColumnValuesToNotMatchRegex(
            column="text", regex=_GARBLE, mostly=_share_mostly(clean, mostly, slack)))
    non_empty = 1 - float(reference.get("empty_text", pd.Series([False])).astype(bool).mean())
    exps.append(E.ExpectColumnValuesToBeInSet(
        column="empty_text", value_set=[False], mostly=_share_mostly(non_empty, mostly, slack)))

    meta = {"bastion": {"categories": list(categories), "quantile": quantile, "slack": slack,
                        "mostly": mostly, "n_reference": int(len(reference))}}
    suite = gx.ExpectationSuite(name=name, expectations=exps, meta=meta)
    return dict(json.loads(json.dumps(suite.to_json_dict())))


def _parse_suite(suite: Any) -> Any:
    """The GX ExpectationSuite of a suite dict; ValueError naming what is wrong."""
    gx = gx_module()  # GX on first use (see _gx); then its submodules
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    if not isinstance(suite, Mapping) or not isinstance(suite.get("name"), str):
        raise ValueError("validate: the suite must be a dict with a 'name' (build_suite's output)")
    specs = suite.get("expectations")
    if not isinstance(specs, list) or not specs:
        raise ValueError(f"validate: suite {suite['name']!r} has no 'expectations' list")
    built = []
    for i, spec in enumerate(specs):
        where = f"suite {suite['name']!r}, expectations[{i}]"
        if not (isinstance(spec, Mapping) and isinstance(spec.get("type"), str)
                and isinstance(spec.get("kwargs"), Mapping)):
            raise ValueError(f"validate: {where} needs a 'type' string and a 'kwargs' dict")
        try:  # GX's ExpectationSuite would log and silently drop an invalid expectation
            config = ExpectationConfiguration(
                type=spec["type"], kwargs=dict(spec["kwargs"]), meta=spec.get("meta") or {})
            built.append(config.to_domain_obj())
        except Exception as exc:
            raise ValueError(f"validate: {where} ({spec['type']}) is invalid: {exc}") from exc
    return gx.ExpectationSuite(name=suite["name"], expectations=built)


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a reported value (texts cut to ``_SAMPLE_CHARS``)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, int | float | bool):
        return value
    return (value if isinstance(value, str) else str(value))[:_SAMPLE_CHARS]


def _error_of(info: Any) -> str | None:
    """GX's exception info (flat, or one entry per metric) as one message."""
    if not isinstance(info, Mapping):
        return None
    infos = [info] if "raised_exception" in info else list(info.values())
    msgs = [str(i.get("exception_message")) for i in infos
            if isinstance(i, Mapping) and i.get("raised_exception")]
    return "; ".join(dict.fromkeys(msgs)) or None


def _entry(expectation: str, kwargs: dict[str, Any], success: bool, error: str | None
           ) -> dict[str, Any]:
    return {"expectation": expectation, "column": kwargs.get("column"), "kwargs": kwargs,
            "success": success, **dict.fromkeys(_OBSERVED), "sample": [], "item_ids": [],
            "error": error}


def _check(res: Any, frame: pd.DataFrame) -> dict[str, Any]:
    cfg, result = res.expectation_config, dict(res.result or {})
    kwargs = {k: v for k, v in dict(cfg.kwargs).items() if k != "batch_id"}
    check = _entry(cfg.type, json.loads(json.dumps(kwargs, default=str)), bool(res.success),
                   _error_of(res.exception_info))
    column = check["column"]
    if column is not None and column not in frame.columns:  # GX can say "index out of range"
        check.update(success=False, error=f"column {column!r} is missing from the window")
    check.update({k: _plain(result.get(k)) for k in _OBSERVED})
    check["sample"] = [_plain(v) for v in result.get("partial_unexpected_list") or []][:_SAMPLE]
    index = [i for i in result.get("partial_unexpected_index_list") or [] if i in frame.index]
    ids = frame["item_id"] if "item_id" in frame else pd.Series(dtype=object)
    check["item_ids"] = [_plain(ids.get(i)) for i in index[:_SAMPLE]]
    return check


def _ephemeral_context() -> Any:
    """An in-memory GX context: no docs site, no progress bars, analytics off."""
    gx = gx_module()  # GX on first use (see _gx); then its submodules
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False), analytics_enabled=False)
    return gx.get_context(project_config=config, mode="ephemeral")


def validate(frame: pd.DataFrame, suite: dict[str, Any]) -> ValidationResult:
    """Run ``suite`` on ``frame`` with great-expectations (pandas, whole frame as one batch).

    Never raises on bad data: missing columns, wrong types or a frame GX cannot read at all are
    failures in the result, with ``error`` saying why.

    Args:
        frame: A window from :func:`window_frame`.
        suite: A suite dict from :func:`build_suite` (or stored with a model version).

    Returns:
        The :class:`ValidationResult`.

    Raises:
        ValueError: The suite itself is malformed (says which expectation and why).
    """
    gx_suite = _parse_suite(suite)
    version = suite_version(suite)
    order = {(s["type"], json.dumps(s["kwargs"], sort_keys=True, default=str)): i
             for i, s in enumerate(suite["expectations"])}
    n_rows = 0
    try:
        frame = pd.DataFrame(frame).reset_index(drop=True)
        n_rows = len(frame)
        batch = (_ephemeral_context().data_sources.add_pandas("window")
                 .add_dataframe_asset("decisions")
                 .add_batch_definition_whole_dataframe("whole_window")
                 .get_batch(batch_parameters={"dataframe": frame}))
        run = batch.validate(gx_suite, result_format={
            "result_format": "SUMMARY", "partial_unexpected_count": _SAMPLE})
        checks = [_check(r, frame) for r in run.results]
    except Exception as exc:  # a frame GX cannot take at all is still only a failed validation
        failure = _entry("validation_run", {}, False, f"{type(exc).__name__}: {exc}")
        return ValidationResult(False, n_rows, [failure], [failure], version)
    checks.sort(key=lambda c: order.get(
        (c["expectation"], json.dumps(c["kwargs"], sort_keys=True, default=str)), len(order)))
    failures = [c for c in checks if not c["success"]]
    return ValidationResult(not failures, n_rows, failures, checks, version)
