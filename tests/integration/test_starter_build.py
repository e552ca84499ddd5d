"""'bastion starter build' end to end on real sources (a small trial build): every source
this machine has, the artifact written where asked, with fingerprints and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bastion.cli import cli
from bastion.training.datasets import SOURCES, available_sources, source_fingerprint
from tests._requires import in_ci

pytestmark = pytest.mark.model


def test_a_trial_build_writes_a_complete_artifact(tmp_path: Path) -> None:
    if in_ci():  # CI has the development data: the build must read it
        assert any(not SOURCES[n].packaged for n in available_sources())
    out = tmp_path / "starter"
    result = CliRunner().invoke(cli, [
        "starter", "build", "--state-dir", str(tmp_path / "state"), "--out", str(out),
        "--cache", str(tmp_path / "emb"), "--limit", "200"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "metadata.json").read_text())
    assert set(meta["data"]["sources"]) == set(available_sources())
    for name, src in meta["data"]["sources"].items():
        assert src["sha256"] == source_fingerprint(name)
    assert meta["command"].startswith("bastion starter build")
    assert "spam" in meta["categories"]
    held_out = meta["metrics"]["spam"]["all"]
    assert held_out["n"] > 0 and "ece" in held_out
    assert (out / "heads.npz").stat().st_size < 100_000
    assert "Wrote" in result.output


def test_an_unknown_or_absent_source_says_what_is_available(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["starter", "build", "--state-dir", str(tmp_path),
                                      "--out", str(tmp_path / "x"), "--source", "nope"])
    assert result.exit_code == 2
    assert "source(s) nope not available here; available: pyrit, sms_spam" in result.output
