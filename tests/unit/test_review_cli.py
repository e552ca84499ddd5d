"""The `bastion review` commands on a real state directory (SQLite queue and label store)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from bastion.cli import cli
from bastion.core.events import DecisionEvent, EventLog
from bastion.core.keys import load_reviewers, reviewers_path
from bastion.core.settings import load_settings


def run(state: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, [*args, "--state-dir", str(state)])
    return res.exit_code, res.output


def test_keys_gold_queue_moderators_calibrate(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, out = run(state, "review", "keys", "add", "ann", "--tenant", "demo")
    assert code == 0 and out.strip().startswith("rev_")
    assert load_reviewers(reviewers_path(state))["ann"]["tenants"] == ["demo"]
    code, out = run(state, "review", "keys", "add", "bob", "--tenant", "nobody")
    assert code == 2 and "unknown tenant" in out

    gold = tmp_path / "gold.jsonl"
    gold.write_text("\n".join([
        json.dumps({"tenant": "demo", "item_id": "g1", "text": "buy cheap pills now",
                    "labels": {"spam": 1}}),
        "not json",
    ]))
    code, out = run(state, "review", "gold", str(gold))
    assert code == 1 and "queued 1 gold item(s)" in out and "line 2" in out
    code, out = run(state, "review", "queue")
    assert code == 0 and "demo" in out and '"tasks_open": 1' in out
    code, out = run(state, "review", "moderators")
    assert code == 0 and "moderator" in out  # no labels yet: the header only
    code, out = run(state, "review", "calibrate")
    assert code == 0 and "Nothing changed" in out


def test_select_queues_uncertain_logged_items(tmp_path: Path) -> None:
    state = tmp_path / "state"
    run(state, "review", "keys", "list")  # writes the default policy
    log = EventLog(load_settings(state).database_url)
    rng = np.random.default_rng(0)
    log.append([DecisionEvent(
        ts=float(i), request_id="r", tenant="demo", item_id=f"i{i}", session_id=None,
        user_id=None, text=f"message {i}", text_sha256=str(i), text_len=9, decision="allow",
        scores={"spam": s}, reasons=[], model_version="1", policy_version="p",
        embedding=rng.normal(size=8).astype(np.float32))
        for i, s in enumerate([0.01, 0.5, 0.99, 0.45])])
    log.close()
    code, out = run(state, "review", "select", "--budget", "2", "--tenant", "demo")
    assert code == 0 and "queued 2 item(s)" in out
    picked = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    # uncertain around where serving acts (demo's spam blocks at 0.9), not around 0.5
    ids = {p["item_id"] for p in picked}
    assert "i2" in ids and "i0" not in ids  # 0.99 is nearest 0.9; 0.01 is sure
    assert all(p["why"]["threshold"] == 0.9 for p in picked), picked
