"""Plain cases under the default policy and the shipped starter: every plain harmful message
comes back review or block, every benign look-alike allow. And the default policy fits the
shipped starter as written (nothing falls back, nothing is left out)."""

from __future__ import annotations

from importlib import resources

import pytest

from bastion.core.decision import fit_problems, resolve_policy
from bastion.core.model import ModerationModel
from bastion.core.policy import PolicySet, parse_policy
from bastion.training.plain_cases import load_cases, run_cases
from bastion.training.starter import SHIPPED_DIR

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def model() -> ModerationModel:
    return ModerationModel.load(SHIPPED_DIR, precision="fp32")


@pytest.fixture(scope="module")
def policy() -> PolicySet:
    import yaml

    text = resources.files("bastion.core").joinpath("default_policy.yaml").read_text()
    return parse_policy(yaml.safe_load(text), "default_policy.yaml")


def test_the_suite_has_forty_of_each_kind() -> None:
    cases = load_cases()
    assert sum(c.kind == "harmful" for c in cases) >= 40
    assert sum(c.kind == "lookalike" for c in cases) >= 40
    assert len({c.text for c in cases}) == len(cases)


def test_default_policy_fits_the_shipped_starter(model: ModerationModel,
                                                 policy: PolicySet) -> None:
    resolved = resolve_policy(policy, model.head_keys, model.metadata)
    assert fit_problems(resolved) == []


def test_thin_and_weak_categories_never_block_by_themselves(model: ModerationModel,
                                                            policy: PolicySet) -> None:
    shaky = set(model.metadata["thin"]) | set(model.metadata["weak"])
    assert {"sexual", "self_harm", "violence"} <= shaky  # said, not hidden
    for tname, tenant in resolve_policy(policy, model.head_keys, model.metadata).items():
        for cat in tenant.categories:
            if cat.head_key in shaky:
                assert cat.block_threshold is None, f"{tname}/{cat.name} is thin or weak"


@pytest.mark.parametrize("tenant", ["demo"])
def test_plain_harm_is_flagged_and_lookalikes_are_allowed(model: ModerationModel,
                                                          policy: PolicySet,
                                                          tenant: str) -> None:
    result = run_cases(model, policy, tenant)
    harmful, lookalike = result["harmful"], result["lookalike"]
    assert harmful["misses"] == [], f"harmful messages allowed: {harmful['misses']}"
    assert lookalike["misses"] == [], f"benign look-alikes flagged: {lookalike['misses']}"
