"""Labelling tools' exports (JSON Lines, CSV) for ``LabelStore.import_file``: each line
becomes a parsed row, or the reason it cannot be one."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.core.errors import LabelError
from bastion.core.policy import SLUG as CATEGORY_SLUG  # category names as the policy file has them

__all__ = ["IMPORT_FORMATS", "Row", "csv_rows", "jsonl_rows"]

IMPORT_FORMATS = ".jsonl (one JSON object a line) or .csv (a header row, label:<category> columns)"
_JSONL_KEYS = ("item_id", "tenant", "text", "session_id", "user_id", "annotator", "confidence",
               "labels")
_CSV_COLUMNS = ("item_id", "tenant", "text", "session_id", "user_id", "annotator", "confidence")

@dataclass
class Row:  # one parsed line of an import file

    item_id: str
    tenant: str
    text: str
    session_id: str | None
    user_id: str | None
    annotator: str
    confidence: Any  # checked with the labels, as add_label checks them
    labels: dict[str, Any]


def _derive_item_id(tenant: str, text: str) -> str:
    digest = hashlib.sha256(f"{tenant}\0{text}".encode()).hexdigest()
    return f"sha256:{digest[:16]}"


def jsonl_rows(path: Path, default_annotator: str) -> Iterator[tuple[int, Row | str]]:
    """Parsed lines, or why a line cannot be parsed."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").lstrip("\ufeff")
            except UnicodeDecodeError:
                yield lineno, "not UTF-8 text"
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield lineno, f"not valid JSON ({err.msg} at column {err.colno})"
                continue
            yield lineno, _jsonl_row(obj, default_annotator)

def csv_rows(path: Path, default_annotator: str) -> Iterator[tuple[int, Row | str]]:
    """Parsed rows, or why a row cannot be parsed, numbered by their file line."""
    try:  # whole, so that a decoding error rejects the file before any row is imported
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise LabelError(f"cannot import {path}: not UTF-8 text ({err.reason} at byte "
                         f"{err.start}); export it as UTF-8") from None
    reader = csv.reader(io.StringIO(content, newline=""))
    header = next(reader, None)
    if header is None:
        raise LabelError(f"cannot import {path}: the file is empty; a CSV file starts with "
                         "a header row")
    _check_csv_header(path, header)
    for row in reader:
        if any(cell.strip() for cell in row):
            yield reader.line_num, _csv_row(header, row, default_annotator)


def _jsonl_row(obj: object, default_annotator: str) -> Row | str:
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    unknown = sorted(set(obj) - set(_JSONL_KEYS))
    if unknown:
        return f"unknown key(s) {', '.join(unknown)}; the keys are {', '.join(_JSONL_KEYS)}"
    strings: dict[str, str | None] = {}
    for key in ("item_id", "tenant", "text", "session_id", "user_id", "annotator"):
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key} must be a string, got {value!r}"
        strings[key] = value or None
    for key in ("tenant", "text"):
        if strings[key] is None:
            return f"{key} is missing"
    labels = obj.get("labels")
    if not isinstance(labels, dict) or not labels:
        return ('labels must be a non-empty object of category: value in [0, 1], such as '
                '{"hate": 1}')
    confidence = obj.get("confidence")
    tenant, text = str(strings["tenant"]), str(strings["text"])
    return Row(
        item_id=strings["item_id"] or _derive_item_id(tenant, text), tenant=tenant, text=text,
        session_id=strings["session_id"], user_id=strings["user_id"],
        annotator=strings["annotator"] or default_annotator,
        confidence=1.0 if confidence is None else confidence, labels=labels,
    )


def _check_csv_header(path: Path, header: list[str]) -> None:
    names = [h.strip() for h in header]
    dupes = sorted({n for n in names if names.count(n) > 1})
    unknown = [n for n in names if n not in _CSV_COLUMNS and not n.startswith("label:")]
    missing = [n for n in ("tenant", "text") if n not in names]
    bad = [n for n in names if n.startswith("label:") and not re.match(CATEGORY_SLUG, n[6:])]
    problems: list[str] = []
    if dupes:
        problems.append(f"duplicate column(s) {', '.join(dupes)}")
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}")
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if bad:
        problems.append(f"column(s) {', '.join(bad)} do not name a lower-case slug category "
                        "(lower-case letters, digits, _ or -)")
    if not any(n.startswith("label:") for n in names):
        problems.append("no label:<category> column")
    if problems:
        raise LabelError(f"cannot import {path}: bad header row ({'; '.join(problems)}); the "
                         f"columns are {', '.join(_CSV_COLUMNS)} and label:<category>")


def _csv_row(header: list[str], row: list[str], default_annotator: str) -> Row | str:
    if len(row) != len(header):
        return f"{len(row)} cell(s) where the header has {len(header)} column(s)"
    # Every cell but the text is trimmed: the text is kept as exported (it is what is judged).
    cells = {h.strip(): c if h.strip() == "text" else c.strip()
             for h, c in zip(header, row, strict=True)}
    for key in ("tenant", "text"):
        if not cells[key].strip():
            return f"{key} is empty"
    labels: dict[str, float] = {}
    for name, cell in cells.items():
        if name.startswith("label:") and cell:
            try:
                labels[name[6:]] = float(cell)
            except ValueError:
                return f"{name} must be a number in [0, 1], got {cell!r}"
    if not labels:
        return "no label:<category> cell is filled"
    confidence = 1.0
    if cells.get("confidence"):
        try:
            confidence = float(cells["confidence"])
        except ValueError:
            return f"confidence must be a number in (0, 1], got {cells['confidence']!r}"
    tenant, text = cells["tenant"], cells["text"]
    return Row(
        item_id=cells.get("item_id") or _derive_item_id(tenant, text), tenant=tenant, text=text,
        session_id=cells.get("session_id") or None, user_id=cells.get("user_id") or None,
        annotator=cells.get("annotator") or default_annotator, confidence=confidence,
        labels=labels,
    )
