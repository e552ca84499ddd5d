"""Registry lifecycle against real MLflow (the embedded SQLite store, and a real `mlflow
server` on loopback) and real serving: gate, promote under load, corrupt artifacts, rollback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from bastion.core.labelled import LabelledSet
from bastion.core.model import LinearHeads, ModerationModel
from bastion.core.policy import PolicySet, parse_policy
from bastion.core.settings import Settings, load_settings
from bastion.registry.lifecycle import GateRefused, Lifecycle
from bastion.registry.store import CHAMPION, ModelRegistry
from bastion.training.snapshot import build_snapshot

from .conftest import Served, Starter

pytestmark = [pytest.mark.mlflow, pytest.mark.model]

# The gate's policy: categories with enough held-out positives in the test's data to measure.
GATE_POLICY = {
    "gate": {"min_precision": 0.7, "recall_tolerance": 0.05, "max_ece": 0.25,
             "min_positives": 10, "max_p99_ms": 2000},
    "tenants": {
        # the target precision is met on the artifact's own held-out split; this smaller
        # evaluation set (1500 per source, or the packaged ones alone without the development
        # data) mixes sources otherwise, so the gate asks 0.7: these tests are about the
        # lifecycle, not the model's precision
        "acme": {"categories": {"spam": {"target_precision": 0.9, "gate": {
            "min_precision": 0.7}}}},
        "studio": {"categories": {"spam": {"block_threshold": 0.7, "review_threshold": 0.3}}},
    },
}
TEXTS = ["WINNER!! claim your free prize now, text WIN to 80082", "see you at lunch",
         "you are a stupid bitch", "URGENT call 09061701461 to claim your holiday"]


@pytest.fixture(scope="module")
def gate_policy() -> PolicySet:
    return parse_policy(GATE_POLICY)


@pytest.fixture(scope="module")
def eval_data(settings: Settings) -> LabelledSet:
    return build_snapshot(settings, save=False, limit_per_source=1500).part("test")


@pytest.fixture(scope="module")
def embeddings() -> dict[str, np.ndarray]:
    return {}


def variant(base: ModerationModel, *, noise: float = 0.0, negate: str | None = None,
            seed: int = 1) -> ModerationModel:
    """The starter's heads, perturbed (a close candidate) or with one head negated (worse)."""
    rng = np.random.default_rng(seed)
    w = base.heads.weight + rng.normal(0, noise, base.heads.weight.shape).astype(np.float32)
    b = base.heads.bias.copy()
    if negate is not None:
        j = base.head_keys.index(negate)
        w[:, j], b[j] = -w[:, j], -b[j]
    meta = {k: v for k, v in base.metadata.items() if k not in {"version"}}
    meta["kind"] = "candidate"
    return ModerationModel(base.encoder, LinearHeads(base.heads.specs, w, b), meta)


def register(settings: Settings, model: ModerationModel, corrupt: bool = False) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = model.save(Path(tmp) / "bastion")
        if corrupt:
            (path / "heads.npz").write_bytes(b"not a numpy archive")
            (path / "metadata.json").write_text(
                (path / "metadata.json").read_text())  # metadata stays valid
        info = ModelRegistry(settings).log_version(
            path, run_name="candidate", params={"kind": "candidate"}, metrics={},
            tags={"bastion.kind": "candidate"}, validate=not corrupt)
    return info.version


def lifecycle(settings: Settings, policy: PolicySet, data: LabelledSet,
              embeddings: dict[str, np.ndarray]) -> Lifecycle:
    return Lifecycle(settings, policy, eval_data=data, latency_items=30, embeddings=embeddings)


def scores_of(served: Served, texts: list[str]) -> tuple[str, list[dict[str, float]]]:
    body = served.moderate("acme", texts).json()
    return body["model_version"], [r["scores"] for r in body["results"]]


def wait_for_version(served: Served, version: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if served.moderate("acme", ["ping"]).json()["model_version"] == version:
            return
        time.sleep(0.5)
    raise AssertionError(f"serving did not move to version {version} in {timeout}s")


def test_worse_candidate_is_rejected_naming_tenant_and_category(
        served: Served, starter: Starter, gate_policy: PolicySet, eval_data: LabelledSet,
        embeddings: dict) -> None:
    version = register(served.settings, variant(starter.model, negate="spam"))
    lc = lifecycle(served.settings, gate_policy, eval_data, embeddings)
    with pytest.raises(GateRefused, match=r"acme.*spam|spam.*acme") as err:
        lc.promote(version, reason="test: worse candidate")
    assert "studio" in str(err.value)
    assert lc.registry.by_alias(CHAMPION).version == starter.version
    tags = lc.registry.get(version).tags
    assert tags["validation_status"] == "failed" and "acme/spam" in tags["bastion.gate_failures"]
    assert lc.audit()[-1]["action"] == "refused"


def test_promote_under_load_then_rollback_restores_exact_scores(
        served: Served, starter: Starter, gate_policy: PolicySet, eval_data: LabelledSet,
        embeddings: dict) -> None:
    v1, before = scores_of(served, TEXTS)
    assert v1 == starter.version
    candidate = register(served.settings, variant(starter.model, noise=0.02))
    lc = lifecycle(served.settings, gate_policy, eval_data, embeddings)

    stop = threading.Event()
    statuses: list[int] = []
    versions: set[str] = set()

    def load() -> None:
        with httpx.Client(base_url=served.url, timeout=60) as c:
            while not stop.is_set():
                r = c.post("/v1/moderate", json={"tenant": "acme", "items": [
                    {"id": str(i), "text": t} for i, t in enumerate(TEXTS)]},
                    headers={"Authorization": f"Bearer {served.keys['acme']}"})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.update(x["model_version"] for x in r.json()["results"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        result = lc.promote(candidate, reason="test: close candidate")
        assert result.promoted and not result.forced and result.previous == v1
        wait_for_version(served, candidate)
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert statuses and set(statuses) == {200}, f"{statuses.count(200)}/{len(statuses)} ok"
    assert versions == {v1, candidate}
    assert lc.registry.get(candidate).tags["validation_status"] == "passed"

    old, new = lc.rollback(reason="test: back")
    assert (old, new) == (candidate, v1)
    wait_for_version(served, v1)
    again, after = scores_of(served, TEXTS)
    assert again == v1 and after == before  # exactly the earlier scores
    assert [e["action"] for e in lc.audit()][-2:] == ["promoted", "rollback"]


def test_corrupt_artifact_is_rejected_and_serving_goes_on(
        served: Served, starter: Starter, gate_policy: PolicySet, eval_data: LabelledSet,
        embeddings: dict) -> None:
    champion = ModelRegistry(served.settings).by_alias(CHAMPION).version
    bad = register(served.settings, variant(starter.model, noise=0.01), corrupt=True)
    lc = lifecycle(served.settings, gate_policy, eval_data, embeddings)
    with pytest.raises(GateRefused, match="cannot be loaded"):
        lc.promote(bad, force=True)
    # Someone moves the alias outside Bastion: serving must stay up on the old version.
    lc.client.set_registered_model_alias(lc.name, CHAMPION, bad)
    try:
        deadline = time.time() + 30
        error = None
        while time.time() < deadline and not error:
            with served.client() as c:
                error = c.get("/readyz").json()["scorer"].get("load_error")
            time.sleep(0.5)
        assert error and f"version {bad} failed to load" in error
        body = served.moderate("acme", TEXTS).json()
        assert body["model_version"] == champion
    finally:
        lc.client.set_registered_model_alias(lc.name, CHAMPION, champion)


def test_models_cli_lists_shows_and_audits(served: Served) -> None:
    from click.testing import CliRunner

    from bastion.cli import cli

    state = ["--state-dir", str(served.settings.state_dir)]
    runner = CliRunner()
    out = runner.invoke(cli, ["models", "list", *state])
    assert out.exit_code == 0, out.output
    assert "@champion" in out.output and "failed" in out.output
    out = runner.invoke(cli, ["models", "audit", *state])
    actions = [json.loads(line)["action"] for line in out.output.splitlines()]
    assert "refused" in actions and "rollback" in actions
    version = ModelRegistry(served.settings).list_versions()[-1].version
    out = runner.invoke(cli, ["models", "show", version, *state])
    assert out.exit_code == 0 and f"version {version}" in out.output


# -- a real MLflow tracking server on loopback ----------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
               MLFLOW_DISABLE_TELEMETRY="true")
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            raise RuntimeError("mlflow server did not start in 60 s")
        yield url
    finally:
        assert os.environ.get("MLFLOW_TRACKING_URI") == saved_env  # nothing leaked the URL
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_gate_promote_rollback_on_a_real_mlflow_server(
        mlflow_server: str, tmp_path: Path, starter: Starter, gate_policy: PolicySet,
        eval_data: LabelledSet, embeddings: dict) -> None:
    settings = load_settings(tmp_path / "state", mlflow_tracking_uri=mlflow_server)
    first = register(settings, variant(starter.model, noise=0.0))
    reg = ModelRegistry(settings)
    reg.client.set_registered_model_alias(reg.name, CHAMPION, first)
    lc = lifecycle(settings, gate_policy, eval_data, embeddings)
    worse = register(settings, variant(starter.model, negate="spam"))
    with pytest.raises(GateRefused, match="acme"):
        lc.promote(worse)
    good = register(settings, variant(starter.model, noise=0.02, seed=3))
    assert lc.promote(good).promoted
    assert reg.by_alias(CHAMPION).version == good
    loaded = ModerationModel.load(reg.download(good))
    np.testing.assert_array_equal(
        loaded.score(TEXTS)[1], variant(starter.model, noise=0.02, seed=3).score(TEXTS)[1])
    assert lc.rollback() == (good, first)
    assert reg.by_alias(CHAMPION).version == first
    assert [e["action"] for e in lc.audit()] == ["refused", "promoted", "rollback"]
