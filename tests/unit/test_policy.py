from __future__ import annotations

from pathlib import Path

import pytest

from bastion.core.errors import PolicyError
from bastion.core.policy import Action, load_policy, parse_policy

DEFAULT = Path(__file__).resolve().parents[2] / "core" / "default_policy.yaml"


def minimal(**cat: object) -> dict:
    return {"tenants": {"acme": {"categories": {"hate": cat or {"block_threshold": 0.8}}}}}


def test_default_policy_is_valid() -> None:
    pol = load_policy(DEFAULT)
    assert "demo" in pol.tenants
    assert pol.tenants["demo"].store_raw_text is False  # privacy by default


def test_parsed_policy_is_frozen() -> None:
    pol = parse_policy(minimal())
    with pytest.raises(Exception, match="frozen"):
        pol.tenants["acme"].store_raw_text = True  # type: ignore[misc]


def test_thresholds_block_target_or_review_only() -> None:
    with pytest.raises(PolicyError, match=r"tenants\.acme\.categories\.hate: give "
                                          r"block_threshold .* or review_threshold alone"):
        parse_policy(minimal(action="block"))
    with pytest.raises(PolicyError, match="not both"):
        parse_policy(minimal(block_threshold=0.8, target_precision=0.9))
    review_only = parse_policy(minimal(review_threshold=0.3)).tenants["acme"].categories["hate"]
    assert review_only.block_threshold is None and review_only.target_precision is None


def test_review_threshold_must_lie_below_block() -> None:
    with pytest.raises(PolicyError, match="review_threshold 0.9 is above block_threshold 0.5"):
        parse_policy(minimal(block_threshold=0.5, review_threshold=0.9))


def test_typo_names_the_key_and_the_fix() -> None:
    with pytest.raises(PolicyError, match=r"hate\.block_treshold: .*unknown key: check its"):
        parse_policy(minimal(block_treshold=0.8))


def test_threshold_out_of_range() -> None:
    with pytest.raises(PolicyError, match=r"hate\.block_threshold: Input should be less than or"):
        parse_policy(minimal(block_threshold=1.5))


def test_keyword_rule_cannot_allow_and_names_must_be_slugs() -> None:
    data = minimal()
    data["tenants"]["acme"]["keywords"] = [{"phrases": ["x"], "action": "allow"}]
    with pytest.raises(PolicyError, match="keyword rule forces block or review"):
        parse_policy(data)
    with pytest.raises(PolicyError, match="tenant name 'Bad Tenant' is not a lower-case slug"):
        parse_policy({"tenants": {"Bad Tenant": minimal()["tenants"]["acme"]}})


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("tenants: [unclosed")
    with pytest.raises(PolicyError, match=rf"{bad}: not valid YAML"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "missing.yaml")
    bad.write_bytes(b"tenants: \xff\xfe")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(bad)
    bad.write_text("- a list")
    with pytest.raises(PolicyError, match="top level must be a mapping"):
        load_policy(bad)


def test_tenant_version_changes_only_with_that_tenant() -> None:
    a = parse_policy({"tenants": {"x": minimal()["tenants"]["acme"],
                                  "y": minimal()["tenants"]["acme"]}})
    data = {"tenants": {"x": minimal()["tenants"]["acme"],
                        "y": minimal(block_threshold=0.7)["tenants"]["acme"]}}
    b = parse_policy(data)
    assert a.tenant_version("x") == b.tenant_version("x")
    assert a.tenant_version("y") != b.tenant_version("y")


def test_action_severity_orders_decisions() -> None:
    assert Action.block.severity > Action.review.severity > Action.allow.severity
