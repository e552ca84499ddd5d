from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from bastion.core.events import DecisionEvent, EventLog
from bastion.core.labels import LabelStore
from bastion.core.policy import parse_policy
from bastion.core.store.tables import metadata
from bastion.review.queue import ReviewQueue
from bastion.review.records import LabelIn, Report, ReviewItem, SessionEvent
from bastion.review.service import IntakeWriter, ReviewService, task_view

POLICY = parse_policy({"tenants": {
    "acme": {"categories": {"hate": {"block_threshold": 0.8, "review_threshold": 0.4,
                                     "severity": 2}},
             "review": {"redundancy": 1, "uncertain_redundancy": 3, "uncertain_margin": 0.1}},
    "studio": {"categories": {"hate": {"block_threshold": 0.8}}, "store_raw_text": True},
}})


def item(item_id: str, score: float, session: str | None = "s1", tenant: str = "acme",
         text: str = "some text") -> ReviewItem:
    return ReviewItem(tenant=tenant, item_id=item_id, text=text, text_sha256="x",
                      session_id=session, user_id="u1", source="decision",
                      scores={"hate": score}, keyword_hits=[], decision="review",
                      model_version="1", policy_version="p", ts=1.0)


@pytest.fixture()
def svc(db_url: str) -> Iterator[ReviewService]:
    q = ReviewQueue(db_url)
    yield ReviewService(q, lambda: POLICY, text_key=b"k" * 32)
    q.close()


def test_intake_groups_a_session_ranks_it_and_asks_more_labels_where_unsure(
        svc: ReviewService) -> None:
    (tid, tid2) = svc.intake_decisions([item("a", 0.45), item("b", 0.75)])
    assert tid == tid2  # one session, one task
    task = svc.queue.task(tid, ["acme"])
    assert len(task.items) == 2 and task.slots == 3  # 0.75 is within 0.1 of the threshold
    assert task.priority > 0 and task.reasons[0]["item_id"] == "b"
    alone = svc.intake_decisions([item("c", 0.45, session=None)])[0]
    assert svc.queue.task(alone, ["acme"]).slots == 1
    # reports and events re-rank
    before = svc.queue.task(tid, ["acme"]).priority
    svc.report(Report(tenant="acme", report_id="r1", reporter="v", reported_user="u1",
                      reported_item=None, session_id="s1", reason="hate", text="", ts=2.0))
    svc.event(SessionEvent(tenant="acme", event_id="e1", session_id="s1", user_id="v",
                           kind="mute", target_user="u1", ts=3.0))
    after = svc.queue.task(tid, ["acme"])
    assert after.priority > before and len(after.reports) == len(after.events) == 1
    assert "gold" not in task_view(after) and "gold" in task_view(after, show_gold=True)


def test_submitted_labels_are_in_the_label_table_once(svc: ReviewService) -> None:
    svc.intake_decisions([item("a", 0.5, session=None)])
    got = svc.claim("ann", ["acme"])
    assert got is not None
    claim, task = got
    svc.submit(claim.token, "sub-1", [LabelIn("a", "hate", 1.0, 0.9)])
    svc.submit(claim.token, "sub-1", [LabelIn("a", "hate", 1.0, 0.9)])  # idempotent
    # written by the submission itself, in its transaction: nothing to copy later
    store = LabelStore(svc.queue.engine)
    (row,) = store.aggregated()
    assert (row.tenant, row.item_id, row.category, row.n_labels) == ("acme", "a", "hate", 1)
    assert row.soft > 0.5
    # calibration evidence: the model's score and the humans' label
    (scores, labels), = svc.reviewed().values()
    assert scores.tolist() == [0.5] and labels[0] > 0.5


def test_one_batch_intake_matches_item_by_item_intake(db_url: str) -> None:
    """The writer drains many requests into one transaction; the queue must end up as if
    each item had come in alone, in order (tasks, slots, context, priorities)."""
    def ctx(item_id: str, session: str) -> ReviewItem:
        return ReviewItem(**{**item(item_id, 0.1, session=session).__dict__,
                             "source": "context", "decision": "allow"})

    arrivals = [item("a", 0.45), item("b", 0.75), ctx("c", "s1"), ctx("d", "s9"),
                item("e", 0.5, session=None), item("a", 0.45)]
    queues = []
    for batched in (False, True):
        q = ReviewQueue(db_url)
        svc = ReviewService(q, lambda: POLICY)
        if batched:
            svc.intake_decisions(arrivals)
        else:
            for it in arrivals:
                svc.intake_decisions([it])
        queues.append(sorted((t.task_id, t.slots, t.priority, [i.item_id for i in t.items])
                             for t in q.pending(["acme"])))
        with q.engine.begin() as conn:  # the next round starts from an empty queue
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())
        q.close()
    assert queues[0] == queues[1]
    (session, alone) = sorted(queues[1], key=lambda t: len(t[3]), reverse=True)
    assert session[3] == ["a", "b", "c"] and alone[3] == ["e"]  # "d": its session has no task


def test_intake_writer_keeps_going_after_bad_data(svc: ReviewService) -> None:
    writer = IntakeWriter(svc, retry_s=0.01)
    writer.submit([item("ok", 0.5, session=None)])
    writer.submit([ReviewItem(**{**item("bad", 0.5).__dict__, "source": "nowhere"})])
    writer.submit([item("ok2", 0.5, session=None)])
    writer.close()
    assert svc.queue.stats()["items"] == 2 and writer.rejected == 1 and writer.health().ok


def test_active_learning_queues_uncertain_logged_items(svc: ReviewService) -> None:
    log = EventLog(svc.queue.engine)
    rng = np.random.default_rng(0)
    events = []
    for i, s in enumerate([0.01, 0.79, 0.99, 0.02, 0.81, 0.5]):
        events.append(DecisionEvent(
            ts=float(i), request_id="r", tenant="studio", item_id=f"i{i}", session_id=None,
            user_id=None, text=f"text {i}", text_sha256=str(i), text_len=6,
            decision="allow", scores={"hate": s}, reasons=[], model_version="1",
            policy_version="p", embedding=rng.normal(size=8).astype(np.float32)))
    log.append(events)
    log.close()
    picks = svc.select_for_labelling(2, tenants=["studio"])
    assert {p["item_id"] for p in picks} <= {"i1", "i4", "i5"} and len(picks) == 2
    assert svc.queue.stats()["items"] == 2
    again = svc.select_for_labelling(2, tenants=["studio"])
    assert not {p["item_id"] for p in again} & {p["item_id"] for p in picks}


def test_gold_items_measure_moderators(svc: ReviewService) -> None:
    for i in range(6):
        svc.add_gold("acme", f"g{i}", f"gold text {i}", {"hate": float(i % 2)})
    # ann answers every gold item right, bob every one wrong
    for who, flip in (("ann", False), ("bob", True)):
        while (got := svc.claim(who, ["acme"])) is not None:
            claim, task = got
            labels = [LabelIn(it.item_id, "hate",
                              float((int(it.item_id[1:]) % 2) ^ flip)) for it in task.items]
            svc.submit(claim.token, f"{who}-{claim.task_id}", labels)
    rel = {r["annotator"]: r for r in svc.moderators()}
    assert rel["ann"]["gold_accuracy"] == pytest.approx(1.0)
    assert rel["bob"]["gold_accuracy"] == pytest.approx(0.0)
    assert rel["ann"]["n_gold"] == rel["bob"]["n_gold"] == 6
    gold_rows = [r for r in svc.labels.aggregated() if "gold" in r.annotators]
    assert len(gold_rows) == 6


def test_a_sessions_other_items_join_its_task_as_context(svc: ReviewService) -> None:
    ctx = ReviewItem(**{**item("early", 0.01).__dict__, "source": "context",
                        "decision": "allow"})
    assert svc.intake_decisions([ctx]) == []  # no task for the session yet: nothing queued
    (tid,) = svc.intake_decisions([item("bad", 0.5)])
    slots = svc.queue.task(tid, ["acme"]).slots
    later = ReviewItem(**{**item("later", 0.02).__dict__, "source": "context",
                          "decision": "allow"})
    svc.intake_decisions([later])
    task = svc.queue.task(tid, ["acme"])
    assert [i.item_id for i in task.items] == ["bad", "later"] and task.slots == slots
