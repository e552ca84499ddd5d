"""A policy that does not fit the model never stops anything: 'bastion policy validate' and
the first start say what falls back, against a real registry with the shipped starter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bastion.cli import cli
from bastion.core.settings import load_settings
from bastion.training.starter import register_starter

pytestmark = [pytest.mark.mlflow, pytest.mark.model]


def test_validate_names_the_fallback_and_exits_zero(tmp_path: Path) -> None:
    state = tmp_path / "state"
    version, model = register_starter(load_settings(state))
    assert version == "1"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "tenants:\n  acme:\n    categories:\n"
        "      hate: {target_precision: 0.999}\n"      # never reached on held-out data
        "      griefing: {block_threshold: 0.5}\n"     # no head at all
        "      spam: {block_threshold: 0.9}\n")
    result = CliRunner().invoke(cli, ["policy", "validate", str(policy), "--state-dir",
                                      str(state)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "2 category(ies) served otherwise than written" in out
    assert "tenants.acme.categories.hate: target_precision 0.999" in out
    assert "review-only" in out and "block>=never (review only)" in out
    assert "tenants.acme.categories.griefing: model version 1 has no head 'griefing'" in out
    assert "spam            block>=0.900" in out


def test_starter_show_lists_thin_categories() -> None:
    result = CliRunner().invoke(cli, ["starter", "show"])
    assert result.exit_code == 0, result.output
    assert "sexual" in result.output and "THIN" in result.output
    meta = json.loads((Path(__file__).resolve().parents[2]
                       / "training/starter_model/metadata.json").read_text())
    assert meta["command"] in result.output
