from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select

from bastion.cli import cli
from bastion.core.aggregation import Vote, dawid_skene_weights
from bastion.core.errors import BastionError, LabelError
from bastion.core.labels import ImportReport, LabelStore
from bastion.core.store.tables import label_history

KEY = b"an install's text key, 32 chars+"


def store_with_item(db_url: str, item_id: str = "i1", tenant: str = "acme",
                    text: str = "you are awful") -> LabelStore:
    store = LabelStore(db_url, KEY)
    store.add_item(item_id=item_id, tenant=tenant, text=text)
    return store


def test_resubmitting_a_label_changes_nothing(db_url: str) -> None:
    store = store_with_item(db_url)
    assert store.add_label(tenant="acme", item_id="i1", annotator="ann", category="hate", value=1.0,
                           ts=100.0) == "added"
    assert store.add_label(tenant="acme", item_id="i1", annotator="ann", category="hate", value=1,
                           ts=200.0) == "unchanged"
    assert store.count_labels() == 1
    assert store.stats()["last_label_ts"] == 100.0  # no write on "unchanged"


def test_a_revision_replaces_the_label_and_keeps_the_old_one(db_url: str) -> None:
    store = store_with_item(db_url)
    store.add_label(tenant="acme", item_id="i1", annotator="ann", category="hate",
                    value=1.0, ts=100.0)
    assert store.add_label(tenant="acme", item_id="i1", annotator="ann", category="hate", value=0.5,
                           confidence=0.8, ts=200.0) == "revised"
    assert store.add_label(tenant="acme", item_id="i1", annotator="ann", category="hate", value=0.5,
                           confidence=0.6, ts=300.0) == "revised"  # confidence alone counts
    assert store.count_labels() == 1
    assert store.votes() == {("acme:i1", "hate"): [Vote("ann", 0.5, 0.6)]}
    [row] = store.aggregated()
    assert row.n_labels == 1 and row.annotators == ("ann",)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        history = conn.execute(select(
            label_history.c.value, label_history.c.confidence, label_history.c.ts,
            label_history.c.replaced_ts).order_by(label_history.c.seq)).tuples().all()
    engine.dispose()
    assert history == [(1.0, 1.0, 100.0, 200.0), (0.5, 0.8, 200.0, 300.0)]


def test_an_item_id_names_one_text_of_one_tenant(db_url: str) -> None:
    store = store_with_item(db_url)
    store.add_item(item_id="i1", tenant="acme", text="you are awful", session_id="s1",
                   user_id="u1")  # same item again: a no-op that fills in session and user
    with pytest.raises(LabelError, match=r"item 'i1' of tenant 'acme' is already labelled with "
                       r"another text 'you are awful'"):
        store.add_item(item_id="i1", tenant="acme", text="you are lovely")
    # an item is (tenant, item_id): another tenant's "i1" is another item
    store.add_item(item_id="i1", tenant="other", text="you are lovely")
    store.add_label(tenant="acme", item_id="i1", annotator="ann", category="hate", value=1.0)
    [row] = store.aggregated()
    assert (row.text, row.session_id, row.user_id) == ("you are awful", "s1", "u1")
    assert issubclass(LabelError, BastionError)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"value": 1.5}, r"label value of 'hate' on item 'i1' must be a number in \[0, 1\]"),
    ({"value": float("nan")}, r"must be a number in \[0, 1\]"),
    ({"value": True}, r"must be a number in \[0, 1\].*got True"),
    ({"confidence": 0.0}, r"confidence of the 'hate' label on item 'i1' .* in \(0, 1\]"),
    ({"category": "Hate"}, r"category 'Hate' on item 'i1' is not a lower-case slug"),
    ({"category": "Self Harm"}, r"category 'Self Harm' .* \(lower-case letters, digits, _ or -"),
    ({"annotator": " "}, r"annotator of item 'i1' must be a non-empty string"),
    ({"item_id": "nope"}, r"no item 'nope' of tenant 'acme' in the label store; store it first"),
])
def test_invalid_labels_say_what_is_wrong(db_url: str, kwargs: dict[str, object],
                                          message: str) -> None:
    store = store_with_item(db_url)
    args: dict[str, object] = {"item_id": "i1", "annotator": "ann", "category": "hate",
                               "value": 1.0, "confidence": 1.0} | kwargs
    with pytest.raises(LabelError, match=message):
        store.add_label(tenant="acme", **args)  # type: ignore[arg-type]
    assert store.count_labels() == 0


def test_invalid_items_say_what_is_wrong(db_url: str) -> None:
    store = LabelStore(db_url, KEY)
    with pytest.raises(LabelError, match=r"tenant 'Acme' of item 'x' is not a lower-case slug"):
        store.add_item(item_id="x", tenant="Acme", text="hi")
    with pytest.raises(LabelError, match=r"item_id must be a non-empty string"):
        store.add_item(item_id="", tenant="acme", text="hi")
    with pytest.raises(LabelError, match=r"item 'x' has no text"):
        store.add_item(item_id="x", tenant="acme", text="  ")
    assert store.stats()["items"] == 0


def test_add_labels_is_all_or_nothing(db_url: str) -> None:
    store = store_with_item(db_url)
    with pytest.raises(LabelError, match=r"label value of 'offensive'"):
        store.add_labels("acme", "i1", "ann", {"hate": 1.0, "offensive": 2.0})
    assert store.count_labels() == 0
    assert store.add_labels("acme", "i1", "ann", {"hate": 1.0, "offensive": 0.5}) == {
        "hate": "added", "offensive": "added"}
    assert store.add_labels("acme", "i1", "ann", {"hate": 1.0, "offensive": 0.0}) == {
        "hate": "unchanged", "offensive": "revised"}
    with pytest.raises(LabelError, match=r"no labels given for item 'i1'"):
        store.add_labels("acme", "i1", "ann", {})


def test_aggregation_of_disagreeing_annotators(db_url: str) -> None:
    store = LabelStore(db_url, KEY)
    store.add_item(item_id="a", tenant="acme", text="first")
    store.add_item(item_id="b", tenant="games", text="second")
    store.add_labels("acme", "a", "ann1", {"hate": 1.0, "offensive": 1.0}, confidence=1.0)
    store.add_labels("acme", "a", "ann2", {"hate": 1.0, "offensive": 1.0}, confidence=0.5)
    store.add_labels("acme", "a", "ann3", {"hate": 0.0, "offensive": 1.0}, confidence=0.5)
    # spam on "b": a 0/1 split at equal confidence
    store.add_label(tenant="games", item_id="b", annotator="ann1", category="spam", value=1.0)
    store.add_label(tenant="games", item_id="b", annotator="ann2", category="spam", value=0.0)
    rows = store.aggregated()  # Dawid-Skene (core.aggregation), the numbers it gives
    got = [(r.item_id, r.tenant, r.category, r.n_labels, r.annotators) for r in rows]
    assert got == [
        ("a", "acme", "hate", 3, ("ann1", "ann2", "ann3")),
        ("a", "acme", "offensive", 3, ("ann1", "ann2", "ann3")),
        ("b", "games", "spam", 2, ("ann1", "ann2")),
    ]
    votes = store.votes()
    assert {(k, c): (r.soft, r.weight) for (k, c), r in zip(votes, rows, strict=True)} == \
        dawid_skene_weights(votes)
    hate, offensive, spam = rows
    assert offensive.soft > hate.soft > 0.5 and offensive.weight > hate.weight
    assert spam.weight == min(r.weight for r in rows)
    assert [r.item_id for r in store.aggregated(tenants=["games"])] == ["b"]
    assert store.aggregated(tenants=[]) == []


def test_since_selects_items_labelled_after_it(db_url: str) -> None:
    store = LabelStore(db_url, KEY)
    for item_id in ("old", "new"):
        store.add_item(item_id=item_id, tenant="acme", text=item_id)
    store.add_label(tenant="acme", item_id="old", annotator="ann", category="hate",
                    value=1.0, ts=100.0)
    store.add_label(tenant="acme", item_id="new", annotator="ann", category="hate",
                    value=1.0, ts=100.0)
    store.add_label(tenant="acme", item_id="new", annotator="ann", category="spam",
                    value=0.0, ts=300.0)
    # an item labelled after `since` comes with all its labels, the older ones too
    assert [(r.item_id, r.category) for r in store.aggregated(since=200.0)] == [
        ("new", "hate"), ("new", "spam")]
    assert store.aggregated(since=300.0) == []  # strictly after
    assert store.count_labels(since=200.0) == 1
    assert store.count_labels(tenant="acme") == 3 and store.count_labels(tenant="x") == 0


def test_eight_threads_share_one_store(db_url: str) -> None:
    store = LabelStore(db_url, KEY)
    for i in range(25):
        store.add_item(item_id=f"i{i}", tenant="acme", text=f"text {i}")
    outcomes: list[str] = []

    def label(annotator: str) -> None:
        for i in range(25):
            for _ in range(2):  # the second submission is a no-op
                outcomes.append(store.add_label(tenant="acme", item_id=f"i{i}", annotator=annotator,
                                                category="hate", value=i % 2))

    threads = [threading.Thread(target=label, args=(f"ann{t}",)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(outcomes)) == ["added", "unchanged"]
    assert outcomes.count("added") == 200 and store.count_labels() == 200
    assert store.stats()["annotators"] == 8


def _label_from_another_process(path: str, annotator: str) -> None:
    store = LabelStore(path, KEY)
    for i in range(100):
        # both processes store the same items: the second add_item of each is a no-op
        store.add_item(item_id=f"i{i}", tenant="acme", text=f"text {i}")
        store.add_labels("acme", f"i{i}", annotator, {"hate": 1.0, "spam": 0.0})
    store.close()


def test_two_processes_share_one_store(db_url: str) -> None:
    path = db_url
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_label_from_another_process, args=(path, f"p{n}"))
             for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    stats = LabelStore(path, KEY).stats()
    assert (stats["items"], stats["labels"], stats["annotators"]) == (100, 400, 2)


JSONL_LINES = [
    {"item_id": "j1", "tenant": "acme", "text": "I hate you", "session_id": "s1",
     "annotator": "alice", "confidence": 0.9, "labels": {"hate": 1, "offensive": 0.5}},
    {"tenant": "acme", "text": "buy cheap pills", "labels": {"spam": 1}},
    {"item_id": "j3", "tenant": "acme", "text": "hi", "labels": {"hate": 3}},
]


def test_jsonl_import_reports_a_bad_line_and_imports_the_rest(tmp_path: Path, db_url: str) -> None:
    file = tmp_path / "labels.jsonl"
    lines = [json.dumps(line) for line in JSONL_LINES]
    file.write_text("\n".join([lines[0], "{not json", "", lines[1], lines[2]]) + "\n")
    store = LabelStore(db_url, KEY)
    report = store.import_file(file)
    assert report == ImportReport(items=2, labels_added=3, labels_unchanged=0, labels_revised=0,
                                  errors=[
        "line 2: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        "line 5: label value of 'hate' on item 'j3' must be a number in [0, 1] (1 = applies, "
        "fractional = unsure), got 3",
    ])
    rows = {(r.item_id, r.category): r for r in store.aggregated()}
    votes = store.votes()
    assert votes[("acme:j1", "hate")] == [Vote("alice", 1.0, 0.9)]
    assert votes[("acme:j1", "offensive")] == [Vote("alice", 0.5, 0.9)]
    assert rows[("j1", "hate")].session_id == "s1"
    # a line without item_id gets one derived from tenant and text
    [spam] = [r for r in rows.values() if r.category == "spam"]
    assert spam.item_id.startswith("sha256:") and spam.annotators == ("import",)
    again = store.import_file(file, default_annotator="import")
    assert (again.labels_added, again.labels_unchanged, len(again.errors)) == (0, 3, 2)


def test_jsonl_line_problems_are_named(tmp_path: Path, db_url: str) -> None:
    file = tmp_path / "bad.jsonl"
    file.write_text("\n".join(json.dumps(x) for x in [
        [1, 2],
        {"tenant": "acme", "text": "x", "labels": {"hate": 1}, "annotater": "bob"},
        {"tenant": "acme", "labels": {"hate": 1}},
        {"item_id": 7, "tenant": "acme", "text": "x", "labels": {"hate": 1}},
        {"tenant": "acme", "text": "x", "labels": {}},
        {"tenant": "ACME", "text": "x", "labels": {"hate": 1}},
    ]) + "\n")
    report = LabelStore(db_url, KEY).import_file(file)
    assert report.items == 0
    assert [e.split(": ", 1)[0] for e in report.errors] == [f"line {n}" for n in range(1, 7)]
    for error, needle in zip(report.errors, [
        "expected a JSON object, got list", "unknown key(s) annotater", "text is missing",
        "item_id must be a string, got 7", "labels must be a non-empty object",
        "tenant 'ACME' of item 'sha256:",
    ], strict=True):
        assert needle in error


def test_derived_item_id(tmp_path: Path, db_url: str) -> None:
    import hashlib

    file = tmp_path / "one.jsonl"
    file.write_text(json.dumps({"tenant": "acme", "text": "hi", "labels": {"hate": 0}}) + "\n")
    store = LabelStore(db_url, KEY)
    store.import_file(file)
    [row] = store.aggregated()
    assert row.item_id == "sha256:" + hashlib.sha256(b"acme\0hi").hexdigest()[:16]


def test_csv_import_reports_a_bad_line_and_imports_the_rest(tmp_path: Path, db_url: str) -> None:
    file = tmp_path / "labels.csv"
    file.write_text(
        "item_id,tenant,text,annotator,confidence,label:hate,label:spam\n"
        'c1,acme,"you, are awful",bob,0.8,1,\n'
        "c2,acme,hello,,,0,0\n"
        "c3,acme,hi,bob,0.8,yes,\n"
        ",games,gg ez,bob,,,1\n"
        "c5,acme,nothing labelled,bob,,,\n",
        encoding="utf-8",
    )
    store = LabelStore(db_url, KEY)
    report = store.import_file(file, default_annotator="tool")
    assert (report.items, report.labels_added) == (3, 4)
    assert report.errors == ["line 4: label:hate must be a number in [0, 1], got 'yes'",
                             "line 6: no label:<category> cell is filled"]
    rows = {(r.item_id, r.category): r for r in store.aggregated()}
    assert rows[("c1", "hate")].text == "you, are awful"
    assert store.votes()[("acme:c1", "hate")] == [Vote("bob", 1.0, 0.8)]
    assert ("c1", "spam") not in rows  # an empty cell is no label
    assert rows[("c2", "spam")].annotators == ("tool",)
    assert store.stats()["by_tenant"] == {"acme": {"items": 2, "labels": 3},
                                          "games": {"items": 1, "labels": 1}}


def test_unusable_files_are_rejected_whole(tmp_path: Path, db_url: str) -> None:
    store = LabelStore(db_url, KEY)
    with pytest.raises(LabelError, match=r"no such file; give a \.jsonl .* or \.csv"):
        store.import_file(tmp_path / "missing.jsonl")
    (tmp_path / "labels.txt").write_text("x")
    with pytest.raises(LabelError, match=r"unknown format '\.txt'; give a \.jsonl"):
        store.import_file(tmp_path / "labels.txt")
    (tmp_path / "bad.csv").write_text("tenant,text,label:Hate,extra\nacme,hi,1,2\n")
    with pytest.raises(LabelError, match=r"bad header row \(unknown column\(s\) extra; "
                       r"column\(s\) label:Hate do not name"):
        store.import_file(tmp_path / "bad.csv")
    assert store.stats()["items"] == 0


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_cli_import_and_stats(tmp_path: Path) -> None:
    file = tmp_path / "labels.jsonl"
    file.write_text("\n".join(json.dumps(x) for x in JSONL_LINES) + "\n")
    code, out = invoke("labels", "import", str(file), "--state-dir", str(tmp_path),
                       "--annotator", "tool")
    assert code == 1
    assert "imported 2 item(s): 3 label(s) added, 0 unchanged, 0 revised" in out
    assert "1 line(s) of" in out and "line 3: label value of 'hate' on item 'j3'" in out
    assert (tmp_path / "bastion.db").exists()

    file.write_text("\n".join(json.dumps(x) for x in JSONL_LINES[:2]) + "\n")
    code, out = invoke("labels", "import", str(file), "--state-dir", str(tmp_path),
                       "--annotator", "tool")
    assert code == 0 and "0 label(s) added, 3 unchanged" in out

    code, out = invoke("labels", "stats", "--state-dir", str(tmp_path))
    assert code == 0
    assert "2 item(s), 3 label(s) by 2 annotator(s)" in out
    assert "acme" in out and "hate" in out and "spam" in out


def test_cli_rejects_an_unusable_file(tmp_path: Path) -> None:
    code, out = invoke("labels", "import", str(tmp_path / "x.xlsx"), "--state-dir",
                       str(tmp_path))
    assert code == 2 and "error: cannot import" in out and "unknown format '.xlsx'" in out
    code, out = invoke("labels", "stats", "--state-dir", str(tmp_path))
    assert code == 0 and "No labels yet" in out
