from __future__ import annotations

import numpy as np
import pytest

from bastion.core.labelled import LabelledSet
from bastion.core.labels import LabelledItem
from bastion.core.policy import parse_policy
from bastion.training.datasets import CATEGORIES
from bastion.training.heads import FitConfig, fit_heads
from bastion.training.retrain import RetrainError, options_from_policy, snapshot_options
from bastion.training.snapshot import connected_groups, labels_to_set


def item(item_id: str, category: str, soft: float, weight: float = 1.0,
         tenant: str = "acme", session: str | None = None) -> LabelledItem:
    return LabelledItem(item_id=item_id, tenant=tenant, text=f"text of {item_id}",
                        session_id=session, user_id=None, category=category, soft=soft,
                        weight=weight, n_labels=1, annotators=("a",))


def test_connected_groups_join_items_sharing_any_key() -> None:
    groups = connected_groups([
        ["item:1", "session:a"], ["item:2", "session:a", "user:x"], ["item:3", "user:x"],
        ["item:4", "session:b"], ["davidson:9", "text:zz"],
    ])
    assert groups[0] == groups[1] == groups[2] == "item:1"
    assert groups[3] == "item:4" and groups[4] == "davidson:9"  # the smallest key names it


def test_labels_become_shared_or_tenant_columns_with_weights() -> None:
    data = labels_to_set([
        item("1", "hate", 1.0, 0.9), item("1", "griefing", 0.5, 0.4),
        item("2", "spam", 0.0), item("3", "griefing", 1.0, tenant="studio"),
    ])
    assert data.categories[: len(CATEGORIES)] == CATEGORIES
    assert data.categories[len(CATEGORIES):] == ["acme/griefing", "studio/griefing"]
    row = data.texts.index("text of 1")
    hate, grief = data.categories.index("hate"), data.categories.index("acme/griefing")
    assert data.targets[row, hate] == 1.0 and data.targets[row, grief] == 0.5
    assert data.weights is not None and data.weights[row, grief] == pytest.approx(0.4)
    assert data.mask.sum() == 4  # nothing else is known


def test_concat_aligns_columns_and_fingerprint_changes_with_weights() -> None:
    seed = LabelledSet(["a"], ["g"], ["seed"], np.ones((1, len(CATEGORIES)), np.float32),
                       np.ones((1, len(CATEGORIES)), bool), list(CATEGORIES))
    labels = labels_to_set([item("1", "griefing", 1.0, 0.5)])
    both = LabelledSet.concat([seed, labels])
    assert both.categories == labels.categories
    assert both.targets.shape == (2, len(CATEGORIES) + 1)
    assert not both.mask[0, -1] and both.loss_weights[1, -1] == pytest.approx(0.5)
    reweighted = labels_to_set([item("1", "griefing", 1.0, 0.9)])
    assert LabelledSet.concat([seed, reweighted]).fingerprint() != both.fingerprint()


def test_fit_heads_with_validation_keeps_the_best_and_stops_early() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    history: list[dict[str, float]] = []
    from bastion.core.model import HeadSpec

    heads = fit_heads(x[:300], y[:300], np.ones_like(y[:300], bool), [HeadSpec("spam")],
                      FitConfig(epochs=2000, lr=0.5, eval_every=10, patience=3),
                      val=(x[300:], y[300:], np.ones_like(y[300:])), history=history)
    assert history[-1]["epoch"] < 2000  # stopped early
    acc = ((heads.score(x[300:]) > 0.5) == (y[300:] > 0.5)).mean()
    assert acc > 0.9


def test_retrain_options_come_from_the_policy_and_flags_override() -> None:
    pol = parse_policy({"retraining": {"mode": "full", "workers": 2, "epochs": 5,
                                       "auto_promote": False, "seed_limit_per_source": 300},
                        "tenants": {"acme": {"categories": {"spam": {"block_threshold": .9}}}}})
    opts = options_from_policy(pol)
    assert (opts.mode, opts.workers, opts.finetune.epochs, opts.promote) == ("full", 2, 5, False)
    assert snapshot_options(opts)["limit_per_source"] == 300  # the gate's held-out set too
    opts = options_from_policy(pol, mode="heads", epochs=1, workers=None)
    assert (opts.mode, opts.workers, opts.finetune.epochs) == ("heads", 2, 1)
    with pytest.raises(RetrainError, match="unknown mode"):
        options_from_policy(pol, mode="everything")


def test_the_gate_reads_the_snapshots_test_split_with_held_out_labels(tmp_path) -> None:  # noqa: ANN001
    """One evaluation set for promote and retrain: the seed test split plus the held-out
    human labels of the state directory."""
    from bastion.core.labels import LabelStore
    from bastion.core.policy import ensure_policy_file, load_policy
    from bastion.core.settings import load_settings
    from bastion.core.textkey import text_key
    from bastion.training.retrain import heldout_data, options_from_policy, snapshot_options
    from bastion.training.snapshot import build_snapshot

    settings = load_settings(tmp_path)
    store = LabelStore(settings.database_url, text_key(settings))
    try:
        for i in range(200):
            store.add_item(item_id=f"i{i}", tenant="acme", text=f"labelled message number {i}",
                           session_id=f"s{i}")
            store.add_labels("acme", f"i{i}", "ann", {"spam": float(i % 2)})
    finally:
        store.close()
    policy = load_policy(ensure_policy_file(settings))
    opts = options_from_policy(policy, limit_per_source=100)
    gate = heldout_data(settings, policy, opts)
    snap = build_snapshot(settings, save=False, **snapshot_options(opts))
    assert gate.texts == snap.part("test").texts
    assert "labels:acme" in set(gate.sources) and "sms_spam" in set(gate.sources)


def test_retraining_keeps_the_heads_no_human_label_trains() -> None:
    from bastion.core.model import HeadSpec, LinearHeads
    from bastion.training.retrain import keep_heads, unlabelled_heads

    seed = LabelledSet(["a", "b"], ["g1", "g2"], ["sms_spam", "pyrit"],
                       np.zeros((2, len(CATEGORIES)), np.float32),
                       np.ones((2, len(CATEGORIES)), bool), list(CATEGORIES))
    data = LabelledSet.concat([seed, labels_to_set([item("1", "spam", 1.0)])])
    specs = [HeadSpec(c) for c in CATEGORIES]
    init = LinearHeads(specs, np.ones((4, len(specs)), np.float32), np.ones(len(specs)))
    kept = unlabelled_heads(data, init)
    assert "spam" not in kept and set(kept) == set(CATEGORIES) - {"spam"}
    fitted = LinearHeads(specs, np.zeros((4, len(specs)), np.float32), np.zeros(len(specs)))
    out = keep_heads(fitted, init, kept)
    spam = CATEGORIES.index("spam")
    assert (out.weight[:, spam] == 0).all() and out.bias[spam] == 0  # trained
    hate = CATEGORIES.index("hate")
    assert (out.weight[:, hate] == 1).all() and out.bias[hate] == 1  # the champion's
