"""``bastion category add`` end to end on the session's Ray Serve application: traffic of a
tenant, then a new category trained on ten examples against that traffic, registered in MLflow,
gated, promoted; serving scores it and sends a matching text to review, never to block."""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import delete

from bastion.core.decision import resolve_policy
from bastion.core.events import EventLog
from bastion.core.policy import load_policy, parse_policy
from bastion.core.store import open_store
from bastion.core.store.tables import label_history, label_items, labels
from bastion.platform import deploy
from bastion.registry.lifecycle import Lifecycle
from bastion.registry.store import CHAMPION, ModelRegistry
from bastion.training.category import ANNOTATOR, add_category
from bastion.training.category_review import queue_for_labelling
from bastion.training.retrain import heldout_data, options_from_policy
from tests.integration.conftest import POLICY, Served, Starter

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.model]

TENANT, NAME = "studio", "crypto_scam"
EXAMPLES = [
    "Send me 0.1 BTC and I'll send back 1 BTC within the hour, guaranteed",
    "Double your ethereum today: transfer to this wallet and get 2x back",
    "I'm giving away bitcoin to the first 100 people who send a small fee to my address",
    "Join my crypto signal group, 500% returns every week, DM me your wallet",
    "Elon is doing a crypto giveaway, send any amount of ETH and receive double",
    "Invest in this new coin before it moons, send USDT to my wallet and I'll manage it",
    "Limited time: deposit 200 dollars in bitcoin and earn 3000 in three days",
    "I can recover your lost crypto, just send a 0.05 BTC verification fee",
    "Free NFT airdrop, connect your wallet and enter your seed phrase to claim",
    "My uncle works at Binance, send me your coins and he will triple them",
]
MATCHING = "send 0.2 bitcoin to my wallet and i will send you back 2 btc, guaranteed profit"


def traffic() -> list[str]:
    """Plain chat of a game's players: 240 distinct lines."""
    who = ["anyone", "my team", "the squad", "you guys", "our clan", "the new player",
           "my friend", "everyone"]
    what = ["up for another match", "ready for the raid", "still on voice chat",
            "going to the tournament", "done with the quest", "around for ranked"]
    when = ["tonight?", "after dinner?", "this weekend?", "in ten minutes?", "tomorrow?"]
    return [f"is {a} {b} {c}" for a, b, c in itertools.product(who, what, when)]


def wait_for_version(served: Served, version: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if served.moderate(TENANT, ["ping"]).json()["model_version"] == version:
            return
        time.sleep(0.5)
    raise AssertionError(f"serving did not move to version {version} in {timeout}s")


def test_a_new_category_is_served_in_the_review_band_only(
        served: Served, starter: Starter, tmp_path: Path) -> None:
    settings = served.settings
    log = EventLog(settings.database_url)
    before = log.count(TENANT)
    texts = traffic()
    for i in range(0, len(texts), 60):
        assert served.moderate(TENANT, texts[i:i + 60]).status_code == 200
    deadline = time.time() + 30  # the event log is written in the background
    while log.count(TENANT) < before + len(texts) and time.time() < deadline:
        time.sleep(0.2)
    log.close()

    # the tests' policy, with room in the latency budget: this machine runs the whole suite
    data = yaml.safe_load(POLICY.read_text())
    data.setdefault("gate", {})["max_p99_ms"] = 10_000
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(data, sort_keys=False))
    policy = parse_policy(data)
    eval_data = heldout_data(settings, policy, options_from_policy(policy, limit_per_source=40))

    result = add_category(settings, policy_path, TENANT, NAME, "crypto giveaway scams",
                          EXAMPLES, target_precision=0.95, eval_data=eval_data,
                          latency_items=10, actor="test")
    registry = ModelRegistry(settings)
    try:
        assert registry.by_alias(CHAMPION).version == result.version
        assert result.previous == starter.version
        assert set(result.negatives) == {"traffic"} and result.negatives["traffic"] >= 200
        assert result.notes == []  # enough traffic: no fallback
        tags = registry.get(result.version).tags
        assert tags["bastion.kind"] == "category"
        assert tags["bastion.category"] == f"{TENANT}/{NAME}"
        assert tags["validation_status"] == "passed"
        meta = registry.metadata(result.version)
        assert meta["heads"]["keys"] == [*starter.model.head_keys, f"{TENANT}/{NAME}"]
        assert meta["category"]["n_positives"] == len(EXAMPLES)  # type: ignore[typeddict-item]

        new_policy = load_policy(policy_path)
        cat = new_policy.tenants[TENANT].categories[NAME]
        assert cat.block_threshold is None and cat.review_threshold == result.review["threshold"]
        assert cat.gate.min_precision == 0.95

        deploy(settings, new_policy, served.keys, served.dashboard)
        wait_for_version(served, result.version)
        body = served.moderate(TENANT, [MATCHING, texts[0]]).json()
        scam, plain = body["results"]
        assert scam["scores"][NAME] >= result.review["threshold"] > plain["scores"][NAME]
        assert scam["decision"] == "review"
        (reason,) = [r for r in scam["reasons"] if r.get("category") == NAME]
        assert reason["band"] == "review" and reason["action"] == "review"
        # review-only: even a score of 1 is never a block by this category
        resolved = resolve_policy(new_policy, meta["heads"]["keys"], meta)[TENANT]
        served_cat = resolved.category(NAME)
        assert served_cat is not None and served_cat.block_threshold is None

        # active learning: the tenant's logged items queued for this category's labels
        picks = queue_for_labelling(settings, new_policy, TENANT, NAME, 5)
        assert len(picks) == 5 and all(p["why"]["category"] == NAME for p in picks)
    finally:
        Lifecycle(settings, policy, eval_data=eval_data).rollback(reason="test cleanup")
        deploy(settings, served.policy, served.keys, served.dashboard)
        wait_for_version(served, starter.version)
        # the examples were stored as labels: later tests train on the store's labels
        engine, _ = open_store(settings.database_url)
        with engine.begin() as conn:
            ids = [r.item_id for r in conn.execute(
                labels.select().where(labels.c.annotator == ANNOTATOR))]
            for table in (labels, label_history):
                conn.execute(delete(table).where(table.c.item_id.in_(ids)))
            conn.execute(delete(label_items).where(label_items.c.item_id.in_(ids)))
        engine.dispose()
        shutil.rmtree(tmp_path, ignore_errors=True)
