"""The review queue on SQLite: claim order, tenant scope, leases, idempotent submission, intake
rules, and concurrent claimers (threads, processes, a process that dies mid-claim).

The ``check_*`` helpers take a database URL; tests/integration/test_review_queue_postgres.py runs
them against PostgreSQL too.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bastion.core.aggregation import Vote
from bastion.core.errors import BastionError, ConfigError
from bastion.core.labels import LabelStore
from bastion.review.queue import (
    LabelIn,
    LeaseLost,
    NotFound,
    Report,
    ReviewError,
    ReviewItem,
    ReviewQueue,
    SessionEvent,
)


class Clock:
    """A settable clock: leases expire when a test says so."""

    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def item(item_id: str, tenant: str = "acme", session_id: str | None = None,
         user_id: str | None = "u1", ts: float = 1.0, source: str = "decision") -> ReviewItem:
    return ReviewItem(tenant=tenant, item_id=item_id, text=f"text of {item_id}",
                      text_sha256="0" * 64, session_id=session_id, user_id=user_id,
                      source=source, scores={"hate": 0.7}, keyword_hits=["x"], decision="flag",
                      model_version="3", policy_version="p1", ts=ts)


def report(report_id: str, *, item_id: str | None = None, user: str | None = None,
           session_id: str | None = None, tenant: str = "acme") -> Report:
    return Report(tenant=tenant, report_id=report_id, reporter="r1", reported_user=user,
                  reported_item=item_id, session_id=session_id, reason="harassment",
                  text="they were mean", ts=5.0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def q(db_url: str, clock: Clock) -> Iterator[ReviewQueue]:
    queue = ReviewQueue(db_url, lease_s=60.0, clock=clock)
    yield queue
    queue.close()


# -- claiming ------------------------------------------------------------------------------


def test_claims_highest_priority_first(q: ReviewQueue) -> None:
    tids = {name: q.add_item(item(name)) for name in ("low", "high", "mid")}
    for name, p in (("low", 0.1), ("high", 0.9), ("mid", 0.5)):
        q.set_priority(tids[name], p, [{"why": name}])
    got = [q.claim("m1", ["acme"]) for _ in range(4)]
    assert [c.task_id if c else None for c in got] == [tids["high"], tids["mid"], tids["low"],
                                                      None]
    assert q.task(tids["high"], ["acme"]).reasons == [{"why": "high"}]
    assert [t.task_id for t in q.pending(["acme"])] == [tids["high"], tids["mid"], tids["low"]]
    with pytest.raises(NotFound, match="no review task 'nope'"):
        q.set_priority("nope", 1.0, [])


def test_tenant_scope_is_never_crossed(q: ReviewQueue) -> None:
    beta = q.add_item(item("b1", tenant="beta"))
    q.set_priority(beta, 10.0, [])
    acme = q.add_item(item("a1"))
    claim = q.claim("m1", ["acme"])
    assert claim is not None and claim.task_id == acme
    assert q.claim("m1", ["acme"]) is None
    assert q.claim("m2", []) is None
    with pytest.raises(NotFound, match="no review task"):
        q.task(beta, ["acme"])  # same error as a task that does not exist: no existence leak
    assert [t.tenant for t in q.pending(["acme", "gamma"])] == ["acme"]
    assert {t.tenant for t in q.pending()} == {"acme", "beta"}
    with pytest.raises(ReviewError, match=r"pass \['acme'\]"):
        q.claim("m1", "acme")


def test_one_moderator_one_slot_per_task_and_three_slots_three_moderators(
        q: ReviewQueue) -> None:
    tid = q.add_item(item("i1"), slots=3)
    a = q.claim("a", ["acme"])
    assert a is not None and (a.task_id, a.slot) == (tid, 0)
    assert q.claim("a", ["acme"]) is None  # two free slots left, none of them for "a"
    b, c = q.claim("b", ["acme"]), q.claim("c", ["acme"])
    assert b is not None and c is not None and {b.slot, c.slot} == {1, 2}
    assert q.claim("d", ["acme"]) is None
    for claim, sid in ((a, "s-a"), (b, "s-b"), (c, "s-c")):
        q.submit(claim.token, sid, [LabelIn("i1", "hate", 1.0)])
    task = q.task(tid, ["acme"])
    assert (task.slots, task.slots_done, task.status) == (3, 3, "done")


def test_an_expired_lease_returns_the_slot(q: ReviewQueue, clock: Clock) -> None:
    q.add_item(item("i1"))
    a = q.claim("a", ["acme"], lease_s=10.0)
    assert a is not None and a.leased_until == clock.t + 10.0
    assert q.claim("b", ["acme"]) is None
    assert q.stats()["slots_leased"] == 1
    clock.t += 10.5
    assert q.stats()["slots_expired"] == 1
    b = q.claim("b", ["acme"])
    assert b is not None and (b.task_id, b.slot) == (a.task_id, a.slot) and b.token != a.token
    with pytest.raises(LeaseLost, match="expired .* claim a task again"):
        q.submit(a.token, "s-a", [LabelIn("i1", "hate", 1.0)])
    with pytest.raises(LeaseLost):
        q.renew(a.token)
    assert q.submit(b.token, "s-b", [LabelIn("i1", "hate", 0.0)]).duplicate is False


def test_a_late_submission_is_accepted_while_the_slot_is_still_free(
        q: ReviewQueue, clock: Clock) -> None:
    q.add_item(item("i1"))
    a = q.claim("a", ["acme"], lease_s=10.0)
    assert a is not None
    clock.t += 100.0
    sub = q.submit(a.token, "s-a", [LabelIn("i1", "hate", 1.0)])
    assert sub.moderator == "a" and not sub.duplicate
    assert q.claim("b", ["acme"]) is None  # the one slot is done


def test_renew_extends_the_lease(q: ReviewQueue, clock: Clock) -> None:
    q.add_item(item("i1"))
    a = q.claim("a", ["acme"], lease_s=10.0)
    assert a is not None
    clock.t += 8.0
    renewed = q.renew(a.token, lease_s=10.0)
    assert renewed.leased_until == clock.t + 10.0 and renewed.token == a.token
    clock.t += 8.0  # past the first lease, inside the renewed one
    assert q.claim("b", ["acme"]) is None
    with pytest.raises(NotFound, match="no claim with this token"):
        q.renew("bogus")
    q.submit(a.token, "s", [LabelIn("i1", "hate", 1.0)])
    with pytest.raises(ReviewError, match="already submitted; nothing to renew"):
        q.renew(a.token)


def test_release_gives_the_slot_to_someone_else(q: ReviewQueue) -> None:
    q.add_item(item("i1"))
    a = q.claim("a", ["acme"])
    assert a is not None
    q.release(a.token)
    q.release(a.token)  # twice is fine
    assert q.claim("a", ["acme"]) is None  # a skipped it: not offered to a again
    b = q.claim("b", ["acme"])
    assert b is not None and b.slot == a.slot
    with pytest.raises(LeaseLost, match="was released"):
        q.submit(a.token, "s-a", [LabelIn("i1", "hate", 1.0)])
    q.submit(b.token, "s-b", [LabelIn("i1", "hate", 1.0)])
    with pytest.raises(ReviewError, match="cannot be released"):
        q.release(b.token)


# -- submitting ----------------------------------------------------------------------------


def test_submission_is_idempotent_by_id(q: ReviewQueue) -> None:
    tid = q.add_item(item("i1", session_id="s1"), slots=2)
    q.add_item(item("i2", session_id="s1"))
    a = q.claim("a", ["acme"])
    assert a is not None
    labels = [LabelIn("i1", "hate", 1.0, 0.8), LabelIn("i2", "hate", 0.0)]
    first = q.submit(a.token, "sub-1", labels)
    again = q.submit(a.token, "sub-1", labels)
    assert not first.duplicate and again.duplicate
    assert (again.labels, again.ts, again.slot) == (first.labels, first.ts, first.slot)
    # the labels are in the one label table, written by the submission itself
    assert LabelStore(q.engine).votes() == {
        ("acme:i1", "hate"): [Vote("a", 1.0, 0.8)], ("acme:i2", "hate"): [Vote("a", 0.0, 1.0)]}
    assert q.task(tid, ["acme"]).slots_done == 1
    with pytest.raises(ReviewError, match="already submitted as 'sub-1'"):
        q.submit(a.token, "sub-2", labels)
    b = q.claim("b", ["acme"])
    assert b is not None
    with pytest.raises(ReviewError, match="'sub-1' was already used for another claim"):
        q.submit(b.token, "sub-1", labels)
    with pytest.raises(NotFound, match="no claim with this token"):
        q.submit("bogus", "sub-3", labels)


@pytest.mark.parametrize(("labels", "message"), [
    ([LabelIn("zz", "hate", 1.0)], r"item 'zz' is not in task .* label only the task's items"),
    ([LabelIn("i1", "hate", 1.5)], r"value of 'hate' on item 'i1' .* in \[0, 1\], got 1.5"),
    ([LabelIn("i1", "hate", 1.0, 0.0)], r"confidence of 'hate' .* in \(0, 1\], got 0.0"),
    ([LabelIn("i1", "Hate Speech", 1.0)], r"category 'Hate Speech' on item 'i1' is not a slug"),
    ([LabelIn("i1", "hate", 1.0), LabelIn("i1", "hate", 0.0)], "labelled twice"),
    ([], "needs at least one label"),
])
def test_invalid_labels_are_refused(q: ReviewQueue, labels: list[LabelIn], message: str) -> None:
    q.add_item(item("i1"))
    claim = q.claim("a", ["acme"])
    assert claim is not None
    with pytest.raises(ReviewError, match=message):
        q.submit(claim.token, "s", labels)
    assert q.submit(claim.token, "s", [LabelIn("i1", "hate", 1.0)]).duplicate is False


def test_submitted_labels_land_in_the_label_table(q: ReviewQueue) -> None:
    for name in ("i1", "i2", "i3"):
        q.add_item(item(name, user_id=f"u-{name}"))
    for n in range(3):
        claim = q.claim("a", ["acme"])
        assert claim is not None
        iid = q.task(claim.task_id, ["acme"]).items[0].item_id
        q.submit(claim.token, f"s{n}", [LabelIn(iid, "hate", 1.0), LabelIn(iid, "spam", 0.0)])
    store = LabelStore(q.engine)
    assert store.count_labels() == 6 and q.stats()["labels"] == 6
    rows = store.aggregated()
    assert [(r.tenant, r.item_id, r.category) for r in rows] == [
        ("acme", i, c) for i in ("i1", "i2", "i3") for c in ("hate", "spam")]
    assert rows[0].text == "text of i1" and rows[0].user_id == "u-i1"
    assert store.votes(reviewed=True) == store.votes()
    assert issubclass(ReviewError, BastionError)


def test_labels_of_an_item_without_text_count_but_do_not_train(q: ReviewQueue) -> None:
    q.add_item(dataclasses.replace(item("i1"), text=None))
    claim = q.claim("a", ["acme"])
    assert claim is not None
    q.submit(claim.token, "s", [LabelIn("i1", "hate", 1.0)])
    store = LabelStore(q.engine)
    assert store.votes() == {("acme:i1", "hate"): [Vote("a", 1.0, 1.0)]}
    assert store.aggregated() == []


# -- intake --------------------------------------------------------------------------------


def test_intake_is_idempotent_and_slots_only_rise(q: ReviewQueue) -> None:
    tid = q.add_item(item("i1"), slots=2)
    assert q.add_item(item("i1")) == tid
    assert q.add_item(item("i1"), slots=3) == tid
    assert q.task(tid, ["acme"]).slots == 3
    assert q.add_report(report("r1", item_id="i1")) == q.add_report(report("r1", item_id="i1"))
    ev = SessionEvent("acme", "e1", "s9", "u1", "mute", "u2", 3.0)
    assert q.add_event(ev) == q.add_event(ev)
    stats = q.stats()
    assert (stats["items"], stats["reports"], stats["events"]) == (1, 1, 1)
    with pytest.raises(ReviewError, match="source 'web' is not one of decision"):
        q.add_item(item("i2", source="web"))
    with pytest.raises(ReviewError, match="tenant 'Acme' is not a lower-case slug"):
        q.add_item(item("i2", tenant="Acme"))
    with pytest.raises(ReviewError, match=r"slots must be an integer in \[1, 20\]"):
        q.add_item(item("i2"), slots=0)


def test_session_items_share_a_task_and_new_content_reopens_it(q: ReviewQueue) -> None:
    tid = q.add_item(item("i1", session_id="s1"))
    assert q.add_item(item("i2", session_id="s1")) == tid
    assert q.add_item(item("i3")) != tid
    task = q.task(tid, ["acme"])
    assert task.group_key == "session:s1" and [i.item_id for i in task.items] == ["i1", "i2"]
    q.set_priority(tid, 1.0, [])
    claim = q.claim("a", ["acme"])
    assert claim is not None and claim.task_id == tid
    q.submit(claim.token, "s", [LabelIn("i1", "hate", 1.0)])
    assert q.task(tid, ["acme"]).status == "done"
    q.add_item(item("i4", session_id="s1"))  # new message in a reviewed session
    task = q.task(tid, ["acme"])
    assert (task.status, task.slots, task.slots_done) == ("open", 2, 1)


def test_reports_attach_by_item_then_user_then_session(q: ReviewQueue) -> None:
    t_item = q.add_item(item("i1", user_id="u1", ts=1.0))
    t_late = q.add_item(item("i2", user_id="u1", session_id="s1", ts=2.0))
    assert q.add_report(report("r1", item_id="i1", user="u1")) == t_item
    assert q.add_report(report("r2", item_id="gone", user="u1")) == t_late  # most recent
    t_sess = q.add_report(report("r3", user="nobody", session_id="s7"))
    t_alone = q.add_report(report("r4", user="nobody"))
    assert t_sess is not None and t_alone is not None
    assert q.task(t_sess, ["acme"]).group_key == "session:s7"
    alone = q.task(t_alone, ["acme"])
    assert alone.group_key == "report:r4" and [r.report_id for r in alone.reports] == ["r4"]
    assert q.claim("a", ["acme"], lease_s=1.0) is not None
    assert q.claim("b", ["acme"]) is not None
    assert q.claim("c", ["acme"]) is None  # item-less tasks have nothing to label yet
    ev = q.add_event(SessionEvent("acme", "e1", "s7", "u3", "leave", None, 6.0))
    assert ev == t_sess and q.task(ev, ["acme"]).events[0].kind == "leave"
    assert q.add_item(item("i9", session_id="s7")) == t_sess


def test_gold_adds_a_slot_once(q: ReviewQueue) -> None:
    tid = q.add_item(item("i1", session_id="s1"))
    q.add_item(item("i2", session_id="s1"))
    q.set_gold("acme", "i1", {"hate": 1.0})
    q.set_gold("acme", "i2", {"hate": 0.0})
    task = q.task(tid, ["acme"])
    assert task.slots == 2 and task.gold == {"i1": {"hate": 1.0}, "i2": {"hate": 0.0}}
    with pytest.raises(NotFound, match="add_item it before giving its gold labels"):
        q.set_gold("acme", "zz", {"hate": 1.0})
    with pytest.raises(ReviewError, match=r"gold value of 'hate' must be a number in \[0, 1\]"):
        q.set_gold("acme", "i1", {"hate": 2.0})


# -- concurrency (shared with the PostgreSQL integration test) -----------------------------


def seed(queue: ReviewQueue, tenant: str, n_tasks: int, slots: int) -> set[tuple[str, int]]:
    out = set()
    for n in range(n_tasks):
        tid = queue.add_item(item(f"i{n}", tenant=tenant), slots=slots)
        queue.set_priority(tid, float(n % 7), [])
        out |= {(tid, s) for s in range(slots)}
    return out


def claim_all(url: str, moderator: str, tenant: str, submit: bool = True) -> list[tuple[str, int]]:
    """Claim (and submit) until the queue has nothing left for this moderator."""
    queue = ReviewQueue(url)
    got = []
    try:
        while (claim := queue.claim(moderator, [tenant])) is not None:
            got.append((claim.task_id, claim.slot))
            if submit:
                iid = queue.task(claim.task_id, [tenant]).items[0].item_id
                queue.submit(claim.token, f"{moderator}-{len(got)}", [LabelIn(iid, "hate", 1.0)])
    finally:
        queue.close()
    return got


def check_threads(url: str, tenant: str = "acme") -> None:
    queue = ReviewQueue(url)
    want = seed(queue, tenant, 50, 2)
    results: dict[str, list[tuple[str, int]]] = {}

    def work(mod: str) -> None:
        results[mod] = claim_all(url, mod, tenant)

    threads = [threading.Thread(target=work, args=(f"m{n}",)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = [pair for pairs in results.values() for pair in pairs]
    assert len(results) == 8 and Counter(got) == Counter(want)  # each (task, slot) once
    for pairs in results.values():
        assert len({tid for tid, _ in pairs}) == len(pairs)  # never two slots of one task
    stats = queue.stats()
    assert (stats["tasks_done"], stats["labels"]) == (50, 100)
    queue.close()


def check_same_moderator_threads(url: str, tenant: str = "acme") -> None:
    """One moderator in four threads (two browser tabs, retries): still one slot per task."""
    queue = ReviewQueue(url)
    seed(queue, tenant, 20, 3)
    results: list[list[tuple[str, int]]] = []
    threads = [threading.Thread(target=lambda: results.append(
        claim_all(url, "solo", tenant, submit=False))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tids = [tid for pairs in results for tid, _ in pairs]
    assert len(tids) == 20 and len(set(tids)) == 20
    queue.close()


def check_processes(url: str, tenant: str = "acme") -> None:
    queue = ReviewQueue(url)
    want = seed(queue, tenant, 50, 2)
    ctx = mp.get_context("spawn")
    with ctx.Pool(3) as pool:
        results = pool.starmap(claim_all, [(url, f"p{n}", tenant) for n in range(3)])
    got = [pair for pairs in results for pair in pairs]
    assert Counter(got) == Counter(want)
    assert queue.stats()["labels"] == 100
    queue.close()


LEASE_S = 1.5  # real seconds: the crashed claimer's lease must pass within the test


def _claim_then_die(url: str, tenant: str) -> None:
    queue = ReviewQueue(url, lease_s=LEASE_S)
    assert queue.claim("crasher", [tenant]) is not None
    os._exit(1)  # no cleanup, no release: as if killed


def _die_mid_transaction(url: str, task_id: str) -> None:
    engine = create_engine(url)
    with engine.connect() as conn:
        conn.begin()
        conn.execute(text("UPDATE review_slots SET state = 'leased', token = 'ghost', "
                          "moderator = 'ghost', leased_until = 1e12 WHERE task_id = :t"),
                     {"t": task_id})
        os._exit(1)  # the transaction never commits


def check_crash(url: str, tenant: str = "acme") -> None:
    queue = ReviewQueue(url)
    first = queue.add_item(item("crash-1", tenant=tenant))
    second = queue.add_item(item("crash-2", tenant=f"{tenant}-b"))
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_claim_then_die, args=(url, tenant))
    proc.start()
    proc.join(30)
    died = time.time()
    assert proc.exitcode == 1
    assert queue.claim("other", [tenant]) is None  # the dead claimer's lease still holds
    proc = ctx.Process(target=_die_mid_transaction, args=(url, second))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 1
    # Its uncommitted lease is gone (PostgreSQL may take a moment to end the dead session).
    deadline = time.time() + 5.0
    while (rescue := queue.claim("rescuer", [f"{tenant}-b"])) is None and time.time() < deadline:
        time.sleep(0.05)
    assert rescue is not None and rescue.task_id == second
    time.sleep(max(0.0, died + LEASE_S + 0.05 - time.time()))
    late = queue.claim("other", [tenant])
    assert late is not None and (late.task_id, late.slot) == (first, 0)
    queue.submit(late.token, "late", [LabelIn("crash-1", "hate", 1.0)])
    queue.close()


def test_threads_never_double_claim(db_url: str) -> None:
    check_threads(db_url)


def test_one_moderator_in_many_threads(db_url: str) -> None:
    check_same_moderator_threads(db_url)


def test_processes_never_double_claim(db_url: str) -> None:
    check_processes(db_url)


def test_a_claimer_dying_mid_claim_loses_nothing(db_url: str) -> None:
    check_crash(db_url)


def test_unusable_database_urls_are_refused() -> None:
    with pytest.raises(ConfigError, match="in-memory SQLite"):
        ReviewQueue("sqlite://")
    with pytest.raises(ConfigError, match="unsupported scheme 'mysql'; give BASTION_DATABASE_URL"):
        ReviewQueue("mysql://x@localhost/db")


# -- batched intake ------------------------------------------------------------------------


def _queue_state(queue: ReviewQueue) -> tuple[list[tuple], list[tuple], list[tuple]]:
    with queue.engine.connect() as conn:
        return (
            conn.execute(text("SELECT task_id, tenant, group_key, slots, slots_done, status, "
                              "n_items FROM review_tasks ORDER BY task_id")).all(),
            conn.execute(text("SELECT tenant, item_id, task_id, source FROM review_items "
                              "ORDER BY tenant, item_id")).all(),
            conn.execute(text("SELECT task_id, slot, state FROM review_slots "
                              "ORDER BY task_id, slot")).all(),
        )


def test_a_batch_does_what_the_same_calls_one_by_one_do(tmp_path: Path) -> None:
    """add_items is set-based (a few statements per batch); random batches (repeats, context
    items, sessions, tasks done and reopened, other tenants) end in the same queue as
    add_item/add_context called in order."""
    import random

    rng = random.Random(14)
    batched = ReviewQueue(f"sqlite:///{tmp_path / 'batched.db'}")
    single = ReviewQueue(f"sqlite:///{tmp_path / 'single.db'}")
    try:
        for _ in range(40):
            batch: list[tuple[ReviewItem, int | None]] = []
            for _ in range(rng.randint(1, 12)):
                it = item(f"i{rng.randint(0, 25)}", tenant=rng.choice(["acme", "acme", "b"]),
                          session_id=rng.choice([None, "s1", "s2", "s3"]))
                batch.append((it, None if rng.random() < 0.25 else rng.randint(1, 3)))
            got = batched.add_items(batch)
            want = [single.add_context(i) if n is None else single.add_item(i, slots=n)
                    for i, n in batch]
            assert got == want
            assert _queue_state(batched) == _queue_state(single)
            if rng.random() < 0.3:  # a task done: the next item in it reopens it
                for queue in (batched, single):
                    with queue.engine.begin() as conn:
                        conn.execute(text(
                            "UPDATE review_tasks SET status='done', slots_done=slots WHERE "
                            "task_id=(SELECT min(task_id) FROM review_tasks WHERE "
                            "status='open')"))
    finally:
        batched.close()
        single.close()
