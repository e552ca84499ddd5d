"""``bastion category``: reading examples, negatives from traffic, the head and its review
threshold, the policy edit, reviewed-precision status, active learning, and the CLI's errors
(no registry, no encoder: the parts that need them are in tests/integration/test_category.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bastion.core.events import DecisionEvent
from bastion.core.model import HeadSpec, LinearHeads
from bastion.core.policy import load_policy, parse_policy
from bastion.training._category_policy import policy_with_category
from bastion.training.category import (
    MIN_POSITIVES,
    CategoryError,
    fit_category_head,
    pick_review_threshold,
    read_examples,
    traffic_negatives,
)
from bastion.training.category_cli import category
from bastion.training.category_review import apply_block_threshold, rank_for_labelling, status_of

DIM = 16


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clusters(n_pos: int, n_neg: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positives around one direction, negatives spread over the sphere."""
    rng = np.random.default_rng(seed)
    centre = unit(rng.normal(size=DIM))
    pos = unit(centre + 0.35 * rng.normal(size=(n_pos, DIM)))
    neg = unit(rng.normal(size=(n_neg, DIM)))
    return pos, neg


# -- examples ------------------------------------------------------------------------------

def test_examples_one_a_line_blank_lines_and_repeats_dropped(tmp_path: Path) -> None:
    f = tmp_path / "ex.txt"
    f.write_text("send 1 btc get 2 back\n\n  send 1 btc get 2 back \nfree nft, enter seed phrase\n")
    assert read_examples(f) == ["send 1 btc get 2 back", "free nft, enter seed phrase"]


def test_examples_from_jsonl_and_csv(tmp_path: Path) -> None:
    j = tmp_path / "ex.jsonl"
    j.write_text(json.dumps({"text": "a"}) + "\n\n" + json.dumps({"text": "b", "id": 2}) + "\n")
    assert read_examples(j) == ["a", "b"]
    c = tmp_path / "ex.csv"
    c.write_text('id,text\n1,"hello, there"\n2,b\n')
    assert read_examples(c) == ["hello, there", "b"]


@pytest.mark.parametrize(("name", "body", "match"), [
    ("bad.jsonl", '{"text": "a"}\nnot json\n', r"line 2 is not JSON"),
    ("bad.jsonl", '{"body": "a"}\n', r"line 1 has no string 'text' field"),
    ("bad.csv", "id,body\n1,a\n", r"no 'text' column"),
])
def test_malformed_examples_name_the_line_or_column(tmp_path: Path, name: str, body: str,
                                                    match: str) -> None:
    f = tmp_path / name
    f.write_text(body)
    with pytest.raises(CategoryError, match=match):
        read_examples(f)


def test_missing_and_binary_example_files(tmp_path: Path) -> None:
    with pytest.raises(CategoryError, match="no such file"):
        read_examples(tmp_path / "nope.txt")
    b = tmp_path / "bin.txt"
    b.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(CategoryError, match="cannot read it as UTF-8"):
        read_examples(b)


# -- negatives from traffic ----------------------------------------------------------------

def event(i: int, emb: np.ndarray | None, version: str = "1",
          modality: str = "text") -> DecisionEvent:
    return DecisionEvent(ts=float(i), request_id="r", tenant="acme", item_id=f"i{i}",
                         session_id=None, user_id=None, text=f"t{i}", text_sha256="x",
                         text_len=2, decision="allow", scores={}, reasons=[],
                         model_version=version, policy_version="p", embedding=emb,
                         modality=modality)


def test_traffic_negatives_keep_the_champions_encoder_and_leave_out_near_positives() -> None:
    pos, neg = clusters(10, 40)
    events = [event(i, e) for i, e in enumerate(neg)]
    events.append(event(100, pos[0] * 0.99))  # an unlabelled positive in the traffic
    events.append(event(101, neg[0], version="9"))  # logged by a version on another encoder
    events.append(event(102, neg[1], modality="image"))  # an image model's embedding
    events.append(event(103, None))  # purged by retention
    fingerprints = {"1": "fp-a", "9": "fp-b"}
    emb, rows, counts = traffic_negatives(events, fingerprints.get, "fp-a", pos)
    assert counts == {"logged": 42, "other_encoder": 1, "near_positive": 1, "used": 40}
    assert len(emb) == len(rows) == 40
    assert "i100" not in {r.item_id for r in rows}


def test_traffic_negatives_are_a_seeded_sample_past_the_limit() -> None:
    pos, neg = clusters(10, 300)
    events = [event(i, e) for i, e in enumerate(neg)]
    a = traffic_negatives(events, lambda _v: "fp", "fp", pos, limit=50, seed=1)
    b = traffic_negatives(events, lambda _v: "fp", "fp", pos, limit=50, seed=1)
    assert len(a[0]) == 50 and a[2]["used"] == 50
    assert [r.item_id for r in a[1]] == [r.item_id for r in b[1]]


# -- the head and its review threshold -----------------------------------------------------

def test_head_from_ten_positives_ranks_held_out_positives_first() -> None:
    pos, neg = clusters(10 + 40, 2000)
    head, pos_oof, neg_oof = fit_category_head(pos[:10], neg[:1500], "acme/scam")
    assert head.keys == ["acme/scam"] and head.weight.shape == (DIM, 1)
    assert pos_oof.shape == (10,) and neg_oof.shape == (1500,)
    from sklearn.metrics import roc_auc_score

    s = head.score(np.vstack([pos[10:], neg[1500:]]))[:, 0]
    y = np.r_[np.ones(40), np.zeros(500)]
    assert roc_auc_score(y, s) > 0.9  # 0.95 with this seed: well above chance (0.5)
    assert roc_auc_score(np.r_[np.ones(10), np.zeros(1500)], np.r_[pos_oof, neg_oof]) > 0.85


def test_review_threshold_reaches_the_recall_unless_the_review_load_binds() -> None:
    neg = np.linspace(0, 1, 1001)  # 2% of the negatives lie at or above 0.98
    # separated positives: the recall point (0.99) is above the load point: recall decides
    easy = pick_review_threshold(np.array([0.995] * 9 + [0.99]), neg)
    assert easy["threshold"] == pytest.approx(0.99) and easy["recall"] == 1.0
    # overlapping positives: catching 90% would review half the traffic; the load decides
    hard = pick_review_threshold(np.linspace(0.4, 1.0, 10), neg)
    assert hard["threshold"] == pytest.approx(0.98, abs=1e-3)
    assert hard["traffic_share"] <= 0.021 and hard["recall"] < 0.9


def test_a_new_head_leaves_every_other_column_as_it_was() -> None:
    from bastion.core.model import ModerationModel
    from bastion.training.category import with_head

    rng = np.random.default_rng(0)
    base_heads = LinearHeads([HeadSpec("hate"), HeadSpec("spam", "acme")],
                             rng.normal(size=(DIM, 2)), rng.normal(size=2))
    new = LinearHeads([HeadSpec("scam", "acme")], rng.normal(size=(DIM, 1)), np.zeros(1))

    class Enc:  # only the heads are combined: the encoder is never called
        identity = {"fingerprint": "f", "path": "/nowhere"}

    base = ModerationModel(encoder=Enc(), heads=base_heads)  # type: ignore[arg-type]
    stacked = with_head(base, new)
    assert stacked.keys == ["hate", "acme/spam", "acme/scam"]
    np.testing.assert_array_equal(stacked.weight[:, :2], base_heads.weight)
    np.testing.assert_array_equal(stacked.bias[:2], base_heads.bias)
    np.testing.assert_array_equal(stacked.weight[:, 2], new.weight[:, 0])
    x = unit(rng.normal(size=(5, DIM)))
    np.testing.assert_allclose(stacked.score(x)[:, 2], new.score(x)[:, 0], atol=1e-6)


# -- the policy file -----------------------------------------------------------------------

POLICY_YAML = """\
# the tenants' policies: comments and the hand layout survive an edit
version: "1"
tenants:
  acme:
    store_raw_text: true
    categories:
      hate:  {review_threshold: 0.6, severity: 3}   # shared head
      spam:
        block_threshold: 0.9

    keywords:
      - name: threats
        phrases: ["i will find you",
                  "watch your back"]
  other:
    categories:
      hate: {review_threshold: 0.5}
"""


def test_the_category_is_added_review_only_leaving_every_other_line(tmp_path: Path) -> None:
    text = policy_with_category(POLICY_YAML, "acme", "crypto_scam", 0.71, "acme/crypto_scam",
                                0.95, "crypto giveaway scams")
    added = [line for line in text.splitlines() if line not in POLICY_YAML.splitlines()]
    *comment, entry = added  # a comment (wrapped) and the entry; nothing else changed
    assert all(c.startswith("      # ") for c in comment) and len(comment) <= 3
    assert comment[0].startswith("      # added by 'bastion category add'")
    assert "crypto giveaway scams" in comment[0]
    assert entry == ("      crypto_scam: {review_threshold: 0.71, head: acme/crypto_scam, "
                        "severity: 1, gate: {min_precision: 0.95}}")
    # after acme's last category (spam and its block), before its keywords
    lines = text.splitlines()
    assert lines.index(entry) == lines.index("        block_threshold: 0.9") + len(added)
    import yaml

    policy = parse_policy(yaml.safe_load(text))
    cat = policy.tenants["acme"].categories["crypto_scam"]
    assert cat.review_threshold == 0.71 and cat.block_threshold is None
    assert cat.target_precision is None  # review-only: the target waits in the gate rule
    assert cat.head == "acme/crypto_scam" and cat.gate.min_precision == 0.95
    assert list(policy.tenants["other"].categories) == ["hate"]


def _reviewed(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reviewed items of a good head: positives score high, negatives low."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(float)
    s = np.clip(np.where(y > 0, 0.8, 0.55) + 0.05 * rng.normal(size=n), 0, 1)
    return s, y


def _policy_with(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_with_category(POLICY_YAML, "acme", "scam", 0.5, "acme/scam", 0.9,
                                         "scams"))
    return path


def test_status_proposes_no_block_threshold_before_enough_reviewed_items(
        tmp_path: Path) -> None:
    policy = load_policy(_policy_with(tmp_path))
    s, y = _reviewed(12)
    st = status_of(policy, "acme", "scam", s, y, n_example_labels=10)
    assert (st.n_reviewed, st.n_example_labels, st.blocks) == (12, 10, False)
    assert st.target_precision == 0.9
    assert st.proposal.proposed_block is None and "fewer than 30" in st.proposal.reason
    with pytest.raises(CategoryError, match="no block threshold to apply"):
        apply_block_threshold(tmp_path / "policy.yaml", st.proposal)


def test_status_proposes_a_block_threshold_once_precision_is_shown_and_apply_writes_it(
        tmp_path: Path) -> None:
    path = _policy_with(tmp_path)
    policy = load_policy(path)
    s, y = _reviewed(300)
    st = status_of(policy, "acme", "scam", s, y)
    assert st.precision_in_band is not None and 0.4 < st.precision_in_band < 0.6
    p = st.proposal
    assert p.proposed_block is not None and p.achieved is not None
    assert p.achieved.precision_lower >= 0.9
    backup = apply_block_threshold(path, p)
    assert backup.exists() and "scam: {review_threshold: 0.5," in backup.read_text()
    after = load_policy(path).tenants["acme"].categories["scam"]
    assert after.block_threshold is not None and after.block_threshold >= p.proposed_block
    assert after.head == "acme/scam" and after.gate.min_precision == 0.9
    changed = [line for line in path.read_text().splitlines()
               if line not in backup.read_text().splitlines()]
    assert len(changed) == 1 and changed[0].startswith("      scam: {block_threshold: ")


def test_status_of_an_unknown_category_says_how_to_add_one(tmp_path: Path) -> None:
    policy = load_policy(_policy_with(tmp_path))
    with pytest.raises(CategoryError, match="has no category 'nope'.*bastion category add"):
        status_of(policy, "acme", "nope", np.zeros(0), np.zeros(0))


# -- active learning -----------------------------------------------------------------------

def test_labelling_picks_unsure_items_away_from_the_examples() -> None:
    rng = np.random.default_rng(0)
    emb = unit(rng.normal(size=(200, DIM)))
    scores = np.linspace(0.0, 1.0, 200)
    examples = emb[150:160]  # items like the examples teach little
    picks = rank_for_labelling(emb, scores, "scam", 0.6, 10, labelled=examples)
    assert len(picks) == 10
    assert all(p.reasons["category"] == "scam" for p in picks)
    assert np.mean([abs(scores[p.index] - 0.6) for p in picks]) < 0.2
    assert not {p.index for p in picks} & set(range(150, 160))


# -- the command's errors ------------------------------------------------------------------

@pytest.fixture()
def state(tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY_YAML)
    return tmp_path


def run(state: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(category, [*args, "--state-dir", str(state)])
    return res.exit_code, res.output


def examples(tmp_path: Path, n: int) -> Path:
    f = tmp_path / f"ex{n}.txt"
    f.write_text("".join(f"send {i} btc and get {2 * i} back\n" for i in range(n)))
    return f


@pytest.mark.parametrize(("args", "match"), [
    (("acme", "scam", "--examples", "{few}"),
     f"9 distinct positive example\\(s\\); a new category needs at least {MIN_POSITIVES}"),
    (("nobody", "scam", "--examples", "{ok}"), "unknown tenant 'nobody'.*add the tenant"),
    (("acme", "hate", "--examples", "{ok}"), "already has a category 'hate'"),
    (("acme", "Bad Name", "--examples", "{ok}"), "not a lower-case slug"),
    (("acme", "scam", "--examples", "{missing}"), "no such file"),
])
def test_bad_input_is_a_message_that_says_how_to_fix_it(state: Path, args: tuple[str, ...],
                                                        match: str) -> None:
    files = {"few": examples(state, 9), "ok": examples(state, 12),
             "missing": state / "missing.txt"}
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    code, out = run(state, "add", *argv[:2], "--description", "d", *argv[2:])
    assert code == 2
    assert out.startswith("error: ")
    import re

    assert re.search(match, out), out
    assert "Traceback" not in out


def test_the_state_dir_may_come_before_the_subcommand(state: Path) -> None:
    # core.jobs.bastion_command writes 'bastion category --state-dir DIR add ...' (the
    # console's new-category form submits it as a Ray job)
    few = examples(state, 3)
    res = CliRunner().invoke(category, ["--state-dir", str(state), "add", "acme", "scam",
                                        "--description", "d", "--examples", str(few)])
    assert res.exit_code == 2 and "3 distinct positive example(s)" in res.output
    res = CliRunner().invoke(category, ["--state-dir", str(state), "list"])
    assert res.exit_code == 0, res.output


def test_retraining_keeps_a_new_categorys_head_until_it_has_labels_of_both_classes() -> None:
    from bastion.core.labelled import LabelledSet
    from bastion.training.retrain import unlabelled_heads

    cols = ["spam", "acme/scam"]

    def labelled(targets: list[list[float]], sources: list[str]) -> LabelledSet:
        n = len(targets)
        return LabelledSet([f"t{i}" for i in range(n)], [f"g{i}" for i in range(n)], sources,
                           np.array(targets, np.float32), np.ones((n, 2), bool), cols)

    init = LinearHeads([HeadSpec.parse(c) for c in cols], np.ones((DIM, 2), np.float32),
                       np.zeros(2, np.float32))
    # the examples of 'bastion category add': positives only (and seed data's negatives)
    examples = labelled([[1, 1], [0, 1], [0, 0]], ["labels:acme", "labels:acme", "sms_spam"])
    assert unlabelled_heads(examples, init) == ["acme/scam"]  # a shared head still trains
    # a moderator's negative from the review band: now it trains
    reviewed = labelled([[1, 1], [0, 1], [0, 0]], ["labels:acme"] * 3)
    assert unlabelled_heads(reviewed, init) == []
