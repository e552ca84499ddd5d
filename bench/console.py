"""The console's server time (issue 15): the queue with 10,000 open tasks and the overview
over 1,000,000 events, through the console's routes (FastAPI, in process, on the platform's
default SQLite database), each timed from request to response over repeated calls.

The data is synthetic in shape (decisions, categories, sessions), spread over the last 24
hours; what is measured is the database's aggregation and the routes' work, not the texts.
Run: ``.venv/bin/python bench/console.py [--events 1000000] [--tasks 10000]``. Writes
bench/results/console.json. Goal: under 300 ms each.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from bastion.core.http import install_error_handlers  # noqa: E402
from bastion.core.keys import key_hash  # noqa: E402
from bastion.core.policy import parse_policy  # noqa: E402
from bastion.core.store import open_store  # noqa: E402
from bastion.core.store.counts import add_event_counts  # noqa: E402
from bastion.core.store.tables import events  # noqa: E402
from bastion.review.console import include_console  # noqa: E402
from bastion.review.queue import ReviewQueue  # noqa: E402
from bastion.review.records import ReviewItem  # noqa: E402
from bastion.review.routes import include_review  # noqa: E402
from bastion.review.service import ReviewService  # noqa: E402
from bench._traffic import machine, write_results  # noqa: E402

CATEGORIES = ["hate", "harassment", "violence", "sexual", "self_harm", "spam"]
TENANTS = ["acme", "studio", "games", "chat"]
POLICY = parse_policy({"tenants": {t: {"categories": {
    c: {"block_threshold": 0.9, "review_threshold": 0.5} for c in CATEGORIES}}
    for t in TENANTS}})


class Access:
    def __init__(self, service: ReviewService) -> None:
        self.service = service

    def review_service(self) -> ReviewService:
        return self.service

    def authenticate(self, request: Any, tenant: str) -> str:
        raise NotImplementedError

    def reviewer_hashes(self) -> dict[str, dict[str, Any]]:
        return {key_hash("bench-key"): {"name": "bench", "role": "mlops",
                                        "tenants": TENANTS}}


def fill_events(url: str, n: int, now: float, rng: random.Random) -> float:
    engine, _ = open_store(url)
    t0 = time.perf_counter()
    chunk = 20_000
    for start in range(0, n, chunk):
        rows = []
        for i in range(start, min(n, start + chunk)):
            r = rng.random()
            decision = "allow" if r < 0.85 else "review" if r < 0.96 else "block"
            cat = None if decision == "allow" else rng.choice(CATEGORIES)
            rows.append({
                "ts": now - rng.random() * 86400, "request_id": f"r{i // 8}",
                "tenant": rng.choice(TENANTS), "item_id": f"i{i}",
                "session_id": f"s{i // 20}", "user_id": f"u{i % 5000}", "text": None,
                "text_sha256": "0" * 64, "text_len": 40, "decision": decision,
                "scores": "{}", "reasons": "[]", "model_version": "1",
                "policy_version": "p", "embedding": None, "category": cat})
        with engine.begin() as conn:  # as EventLog.append writes them
            conn.execute(insert(events), rows)
            add_event_counts(conn, rows)
    engine.dispose()
    return time.perf_counter() - t0


def fill_tasks(service: ReviewService, n: int, now: float, rng: random.Random) -> float:
    t0 = time.perf_counter()
    batch: list[ReviewItem] = []
    for i in range(n):
        scores = {c: rng.random() * 0.6 for c in CATEGORIES}
        scores[rng.choice(CATEGORIES)] = 0.5 + rng.random() * 0.45
        batch.append(ReviewItem(
            tenant=rng.choice(TENANTS), item_id=f"q{i}", text="synthetic text to review",
            text_sha256="0" * 64, session_id=f"qs{i}", user_id=f"u{i}", source="decision",
            scores=scores, keyword_hits=[], decision="review", model_version="1",
            policy_version="p", ts=now - rng.random() * 86400))
        if len(batch) == 500:
            service.intake_decisions(batch)
            batch = []
    if batch:
        service.intake_decisions(batch)
    return time.perf_counter() - t0


def timed(client: TestClient, path: str, repeats: int) -> dict[str, Any]:
    headers = {"Authorization": "Bearer bench-key"}
    client.get(path, headers=headers).raise_for_status()  # warm: caches, compiled statements
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = client.get(path, headers=headers)
        ms.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    return {"path": path, "repeats": repeats, "median_ms": round(statistics.median(ms), 1),
            "max_ms": round(max(ms), 1), "bytes": len(r.content)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=str(ROOT / "bench/results/console.json"))
    args = ap.parse_args()
    rng = random.Random(15)
    now = time.time()
    out: dict[str, Any] = {"benchmark": "console", "machine": machine(),
                           "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "events": args.events, "open_tasks": args.tasks,
                           "database": "sqlite (the embedded default)", "goal_ms": 300}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bastion.db"
        queue = ReviewQueue(url)
        service = ReviewService(queue, lambda: POLICY)
        print(f"filling {args.events} events ...", flush=True)
        out["fill_events_s"] = round(fill_events(url, args.events, now, rng), 1)
        print(f"filling {args.tasks} open tasks ...", flush=True)
        out["fill_tasks_s"] = round(fill_tasks(service, args.tasks, now, rng), 1)
        app = FastAPI()
        install_error_handlers(app)
        include_review(app, Access(service))  # type: ignore[arg-type]
        include_console(app)
        with TestClient(app) as client:
            out["routes"] = {
                "queue": timed(client, "/v1/console/queue", args.repeats),
                "queue_filtered": timed(client, "/v1/console/queue?category=hate",
                                        args.repeats),
                "overview_24h": timed(client, "/v1/console/overview?hours=24&bucket_s=3600",
                                      args.repeats),
                "monitor_15min": timed(client, "/v1/console/monitor", args.repeats),
            }
        queue.close()
    out["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out["summary"] = {k: v["median_ms"] for k, v in out["routes"].items()}
    print(json.dumps(out["summary"], indent=1))
    write_results(args.out, out)


if __name__ == "__main__":
    main()
