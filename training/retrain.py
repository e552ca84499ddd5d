"""A retraining run, end to end: snapshot, train on Ray Train, log, register, gate.

``retrain`` builds the snapshot (seed data + aggregated human labels), starts from the
current ``@champion`` (its backbone, and its heads as the initial weights), trains in one of
two modes, evaluates the result on the snapshot's held-out split, logs everything to one
MLflow run (parameters, per-epoch progress, per-category metrics and curves, the data
fingerprint, the resolved policy, the artifact), registers the version as ``@challenger`` and
runs the promotion gate (``registry.lifecycle``), promoting it when it passes and the policy
allows. ``@champion`` moves only through the gate: a run that fails or is killed registers
nothing, and its MLflow run is marked FAILED.

Modes:
    heads: the backbone stays frozen; embeddings come from a cache keyed by the encoder's
        fingerprint and the text's hash (only new items are encoded); the stacked heads are
        fitted on a one-worker ``TorchTrainer``.
    full: the backbone and all heads are fine-tuned together (``training.finetune``) on
        ``workers`` Ray Train workers, GPUs where the cluster has them.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data
import ray.train
from ray.train import Checkpoint, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from bastion.core.embcache import EmbeddingCache
from bastion.core.encoders import Encoder, HFEncoder, create_encoder
from bastion.core.errors import BastionError, ModelError
from bastion.core.labelled import LabelledSet
from bastion.core.model import HeadSpec, LinearHeads, ModerationModel
from bastion.core.policy import PolicySet
from bastion.core.runtime import start_ray
from bastion.core.settings import Settings
from bastion.registry.evaluation import evaluate_heads
from bastion.registry.lifecycle import GateRefused, Lifecycle
from bastion.registry.store import CHALLENGER, CHAMPION, ModelRegistry
from bastion.training.cascade import fit_for_model
from bastion.training.finetune import FinetuneConfig, run_finetune
from bastion.training.heads import FitConfig, fit_heads, pos_weights
from bastion.training.reference import sample as reference_sample
from bastion.training.snapshot import Snapshot, build_snapshot
from bastion.training.starter import tenant_metrics

__all__ = ["RetrainOptions", "RetrainResult", "RetrainError", "retrain", "options_from_policy",
           "heldout_data", "snapshot_options", "fit_heads_on_ray", "heads_train_loop"]

Say = Callable[[str], None]


HEAD_ANCHOR = 0.01  # L2 pull toward the champion's heads (see FitConfig.anchor)


class RetrainError(BastionError):
    """A retraining run failed; nothing was registered and @champion is untouched."""


@dataclass(frozen=True)
class RetrainOptions:
    mode: str = "heads"  # "heads" | "full"
    workers: int = 1
    use_gpu: bool | None = None  # None: where the Ray cluster has GPUs
    cpus_per_worker: float = 1.0
    seed_data: bool = True
    limit_per_source: int | None = None
    davidson_limit: int | None = None  # None: each source's own default (as the gate's set)
    promote: bool = True
    max_failures: int = 2
    # anchored to the heads it starts from: a run on a machine without the data the champion
    # learned from (the shipped starter's development sets) does not throw that away
    heads: FitConfig = field(default_factory=lambda: FitConfig(anchor=HEAD_ANCHOR))
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    run_name: str | None = None  # default: derived from data + config (re-running resumes)
    reason: str | None = None  # why the run started (a drift trigger's rule); an MLflow tag

    def config_digest(self) -> str:
        cfg = {k: v for k, v in asdict(self).items()
               if k not in ("promote", "run_name", "reason")}
        return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()
                              ).hexdigest()[:8]


def options_from_policy(policy: PolicySet, **flags: Any) -> RetrainOptions:
    """The policy's ``retraining`` defaults, with explicit flags (not None) on top."""
    rp = policy.retraining
    opts = RetrainOptions(mode=rp.mode, workers=rp.workers, seed_data=rp.seed_data,
                          promote=rp.auto_promote, limit_per_source=rp.seed_limit_per_source,
                          finetune=FinetuneConfig(epochs=rp.epochs))
    epochs = flags.pop("epochs", None)
    if epochs is not None:
        opts = replace(opts, finetune=replace(opts.finetune, epochs=epochs))
    opts = replace(opts, **{k: v for k, v in flags.items() if v is not None})
    if opts.mode not in ("heads", "full"):
        raise RetrainError(f"unknown mode {opts.mode!r}: use 'heads' or 'full'")
    return opts


def snapshot_options(opts: RetrainOptions) -> dict[str, Any]:
    """What of a run's options decides its snapshot's items (so its held-out split too)."""
    return {"seed_data": opts.seed_data, "limit_per_source": opts.limit_per_source,
            "davidson_limit": opts.davidson_limit}


def heldout_data(settings: Settings, policy: PolicySet,
                 opts: RetrainOptions | None = None) -> LabelledSet:
    """The one evaluation set of every way a version reaches the gate (``bastion promote``,
    ``bastion retrain``, a drift trigger's run): the test split of the training snapshot the
    policy's retraining options build, i.e. the seed data's held-out split plus the held-out
    human labels. No version trained by Bastion has seen these items."""
    opts = opts or options_from_policy(policy)
    return build_snapshot(settings, save=False, **snapshot_options(opts)).part("test")


@dataclass
class RetrainResult:
    run_id: str
    run_name: str
    mode: str
    version: str | None
    promoted: bool
    gate_passed: bool
    gate_table: str
    snapshot: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    timings_s: dict[str, float]
    cache: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def unlabelled_heads(data: LabelledSet, init: LinearHeads) -> list[str]:
    """The champion's heads that no human label of this snapshot trains (the label store's
    items, not the seed data): refitting them on seed data alone could only lose what the
    champion learned, e.g. from development sets this machine does not have.

    A tenant-owned head whose human labels are all of one class counts as untrained too: the
    examples of a ``bastion category add`` are positives only, and refitting them against the
    seed data's weak negatives (texts nobody judged for the category) throws away the head
    that was fitted against the tenant's own traffic, which the gate then rightly refuses as
    a change with nothing to show for it. Moderators' negatives from the review band make it
    trainable."""
    src = np.asarray(data.sources)
    human = np.char.startswith(src.astype(str), "labels:")
    out = []
    for key in init.keys:
        if key in data.categories:
            j = data.categories.index(key)
            labelled = data.mask[:, j] & human
            positive = data.targets[labelled, j] >= 0.5
            one_class = "/" in key and (positive.all() or not positive.any())
            if not labelled.any() or one_class:
                out.append(key)
    return out


def keep_heads(heads: LinearHeads, init: LinearHeads, keys: list[str]) -> LinearHeads:
    """``heads`` with the columns ``keys`` copied from ``init`` exactly."""
    if not keys:
        return heads
    w, b = heads.weight.copy(), heads.bias.copy()
    for key in keys:
        j, k = heads.index[key], init.index[key]
        w[:, j], b[j] = init.weight[:, k], init.bias[k]
    return LinearHeads(heads.specs, w, b)


def heads_train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker function of the heads-only mode: fit, report, checkpoint."""
    arrays = ray.get(config["arrays"])
    init = None
    if config.get("init") is not None:
        init = LinearHeads([HeadSpec.parse(k) for k in config["init"]["keys"]],
                           np.asarray(config["init"]["weight"], np.float32),
                           np.asarray(config["init"]["bias"], np.float32))
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    heads = fit_heads(
        arrays["x"], arrays["y"], arrays["w"] > 0,
        [HeadSpec.parse(k) for k in config["keys"]], FitConfig(**config["fit"]),
        weights=arrays["w"], val=(arrays["vx"], arrays["vy"], arrays["vw"]), init=init,
        history=history,
    )
    fit_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        heads.save(Path(tmp) / "heads.npz")
        (Path(tmp) / "history.json").write_text(json.dumps(history))
        last = history[-1] if history else {}
        ray.train.report({"fit_s": fit_s, "epochs": last.get("epoch", 0),
                          "val_loss": last.get("val_loss", float("nan"))},
                         checkpoint=Checkpoint.from_directory(tmp))


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # embeddings, soft targets, loss weights


def fit_heads_on_ray(settings: Settings, train: Arrays, val: Arrays, keys: list[str],
                     fit: FitConfig, init: LinearHeads | None, run_name: str
                     ) -> tuple[LinearHeads, list[dict[str, Any]]]:
    """Fit stacked heads on frozen embeddings on a one-worker Ray Train ``TorchTrainer``
    (checkpointed under the settings' train storage): the text heads' and the image heads'
    (``training.image_retrain``) training. Returns the heads and the per-check history."""
    arrays = ray.put({"x": train[0], "y": train[1], "w": train[2],
                      "vx": val[0], "vy": val[1], "vw": val[2]})
    trainer = TorchTrainer(
        heads_train_loop,
        train_loop_config={
            "arrays": arrays, "keys": keys, "fit": asdict(fit),
            "init": None if init is None else {"keys": init.keys,
                                               "weight": init.weight.tolist(),
                                               "bias": init.bias.tolist()},
        },
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(  # type: ignore[call-arg]  # (mypy sees Ray Train v1's class)
            name=run_name, storage_path=_storage(settings),
            logging_config=LoggingConfig(log_level="WARNING")),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RetrainError(f"heads-only run {run_name} ended without a checkpoint")
    with result.checkpoint.as_directory() as d:
        heads = LinearHeads.load(Path(d) / "heads.npz")
        history = json.loads((Path(d) / "history.json").read_text())
    return heads, history


def _base_model(settings: Settings, say: Say) -> ModerationModel | None:
    """The current champion (its backbone is what heads-only mode trains on)."""
    registry = ModelRegistry(settings)
    if not registry.has_champion():
        say("No @champion yet: starting from the stock MiniLM backbone.")
        return None
    info = registry.by_alias(CHAMPION)
    model = ModerationModel.load(registry.download(info.version),
                                 precision=settings.serving.precision)
    model.metadata["version"] = info.version
    say(f"Starting from @champion version {info.version}.")
    return model


def _use_gpu(opts: RetrainOptions) -> bool:
    if opts.use_gpu is not None:
        return opts.use_gpu

    return bool(ray.cluster_resources().get("GPU", 0) > 0)


def _storage(settings: Settings) -> str:
    return settings.train_storage_path


def _train_heads(settings: Settings, snap: Snapshot, keys: list[str], encoder: Encoder,
                 init: LinearHeads | None, opts: RetrainOptions, run_name: str, say: Say,
                 timings: dict[str, float]) -> tuple[LinearHeads, np.ndarray, dict[str, Any],
                                                     list[dict[str, Any]]]:


    cache = EmbeddingCache(settings.database_url, encoder)
    t0 = time.perf_counter()

    def progress(stage: str, done: int, total: int) -> None:
        say(f"  {stage}: {done}/{total} new item(s)")

    try:
        emb, stats = cache.embed(snap.data.texts, progress=progress)
    finally:
        cache.close()
    timings["embed"] = time.perf_counter() - t0
    say(f"Embeddings: {stats.hits} cached, {stats.encoded} encoded "
        f"({timings['embed']:.1f} s).")
    data = snap.data
    tr, va = snap.split == "train", snap.split == "val"
    w = data.loss_weights
    t0 = time.perf_counter()
    heads, history = fit_heads_on_ray(
        settings, (emb[tr], data.targets[tr], w[tr]), (emb[va], data.targets[va], w[va]),
        keys, opts.heads, init, run_name)
    timings["fit"] = time.perf_counter() - t0
    cache_info = asdict(stats)
    return heads, emb, cache_info, history


def _ray_dataset(part: Any, idx: np.ndarray, weights: np.ndarray) -> Any:
    rows = [{"text": part.texts[i], "y": part.targets[i].astype(np.float32),
             "w": weights[i].astype(np.float32)} for i in idx]
    return ray.data.from_items(rows)


def _train_full(settings: Settings, snap: Snapshot, keys: list[str], base_path: str,
                normalize: bool, init: LinearHeads | None, opts: RetrainOptions,
                run_name: str, out_dir: Path, mlflow_target: dict[str, str],
                timings: dict[str, float]) -> tuple[Path, LinearHeads, list[dict[str, Any]],
                                                    int]:
    data = snap.data
    w = data.loss_weights
    tr = np.nonzero(snap.split == "train")[0]
    va = np.nonzero(snap.split == "val")[0]
    init_arrays = None
    if init is not None:
        weight = np.zeros((init.weight.shape[0], len(keys)), np.float32)
        bias = np.zeros(len(keys), np.float32)
        for j, k in enumerate(keys):
            if k in init.index:
                weight[:, j], bias[j] = init.weight[:, init.index[k]], init.bias[init.index[k]]
        init_arrays = (weight, bias)
    t0 = time.perf_counter()
    res = run_finetune(
        encoder_path=base_path, normalize=normalize, head_keys=keys,
        train=_ray_dataset(data, tr, w), val=_ray_dataset(data, va, w), n_train=len(tr),
        pos_weight=pos_weights(data.targets[tr], w[tr], opts.heads.max_pos_weight),
        cfg=opts.finetune, storage_path=_storage(settings), run_name=run_name,
        workers=opts.workers, use_gpu=_use_gpu(opts), cpus_per_worker=opts.cpus_per_worker,
        max_failures=opts.max_failures, init_heads=init_arrays, mlflow_target=mlflow_target,
        out_dir=out_dir,
    )
    timings["fit"] = time.perf_counter() - t0
    heads = LinearHeads([HeadSpec.parse(k) for k in keys], res.weight, res.bias)
    return res.encoder_dir, heads, res.history, res.restarts


def _already_registered(settings: Settings, run_name: str) -> str | None:
    for v in ModelRegistry(settings).list_versions():
        if v.tags.get("bastion.train_run") == run_name:
            return v.version
    return None


@dataclass
class _Fitted:
    """What one training mode hands on: the new heads (and encoder), the held-out split's
    embeddings for the gate (per backbone fingerprint), and how the fit went."""

    heads: LinearHeads
    encoder: Encoder
    test_emb: np.ndarray
    gate_emb: dict[str, np.ndarray]
    bundle: bool
    history: list[dict[str, Any]]
    restarts: int = 0
    cache_info: dict[str, Any] | None = None
    val_emb: np.ndarray | None = None  # the validation split's: calibrates the cascade


def _snapshot_for_run(settings: Settings, policy: PolicySet, opts: RetrainOptions, say: Say,
                      timings: dict[str, float]) -> tuple[Snapshot, str]:
    """The run's snapshot and its name (data fingerprint + configuration); refuses a run that
    is already a registered version."""
    say("Building the training snapshot (seed data + human labels)...")
    t0 = time.perf_counter()
    snap = build_snapshot(settings, **snapshot_options(opts))
    timings["snapshot"] = time.perf_counter() - t0
    summary = snap.summary()
    say(f"Snapshot {snap.fingerprint[:12]}: {summary['n_items']} items "
        f"({summary['n_labelled_items']} from human labels), splits {summary['splits']}.")
    run_name = opts.run_name or f"retrain-{opts.mode}-{snap.fingerprint[:10]}-" \
                                f"{opts.config_digest()}"
    done = _already_registered(settings, run_name)
    if done is not None:
        raise RetrainError(
            f"run {run_name} (this data and configuration) is already version {done}; label "
            "more items or change the configuration to train a new one")
    return snap, run_name


def _open_run(registry: ModelRegistry, snap: Snapshot, run_name: str, opts: RetrainOptions,
              say: Say) -> str:
    """The MLflow run this retraining logs into (a stale RUNNING one of the same name, left by
    a driver that died, is marked FAILED: this run resumes its work)."""
    for stale in registry.client.search_runs(
            [registry.experiment_id()],
            f"tags.`bastion.train_run` = '{run_name}' and attributes.status = 'RUNNING'"):
        registry.fail_run(stale.info.run_id, "the driver stopped; resumed by a later run")
    run_id = registry.start_run(run_name, tags={
        "bastion.kind": f"retrain-{opts.mode}", "bastion.data_fingerprint": snap.fingerprint,
        "bastion.train_run": run_name, "bastion.reason": opts.reason or "manual"})
    registry.client.log_dict(run_id, snap.summary(), "data/snapshot.json")
    registry.log_reference(run_id, reference_sample(snap.part("train").texts))
    registry.client.log_dict(run_id, asdict(opts), "retrain_options.json")
    say(f"MLflow run {run_id} ({run_name}): per-epoch progress is logged there live.")
    return run_id


def _fit_heads_mode(settings: Settings, snap: Snapshot, keys: list[str], encoder: Encoder,
                    base: ModerationModel | None, opts: RetrainOptions, run_name: str,
                    say: Say, timings: dict[str, float]) -> _Fitted:
    say("Heads-only training on Ray Train (backbone frozen)...")
    init = base.heads if base else None
    heads, emb, cache_info, history = _train_heads(
        settings, snap, keys, encoder, init, opts, run_name, say, timings)
    if init is not None:
        kept = unlabelled_heads(snap.data, init)
        heads = keep_heads(heads, init, kept)
        if kept:
            say(f"Kept the champion's heads for {', '.join(kept)}: no human label "
                "of them in this run (the seed data alone would only forget).")
    test_emb = emb[snap.split == "test"]
    return _Fitted(heads=heads, encoder=encoder, test_emb=test_emb,
                   gate_emb={encoder.identity["fingerprint"]: test_emb},
                   bundle=bool(base and base.metadata.get("encoder", {}).get("bundled")),
                   history=history, cache_info=cache_info, val_emb=emb[snap.split == "val"])


def _fit_full_mode(settings: Settings, snap: Snapshot, keys: list[str], encoder: Encoder,
                   base: ModerationModel | None, opts: RetrainOptions, run_name: str,
                   run_id: str, model_dir: Path, say: Say,
                   timings: dict[str, float]) -> _Fitted:
    say(f"Full fine-tuning on Ray Train: {opts.workers} worker(s), up to "
        f"{opts.finetune.epochs} epoch(s)...")
    ident = encoder.identity
    enc_dir, heads, history, restarts = _train_full(
        settings, snap, keys, ident["path"], bool(ident["normalize"]),
        base.heads if base else None, opts, run_name, model_dir / "encoder",
        {"uri": settings.tracking_uri, "run_id": run_id}, timings)
    tuned = HFEncoder(str(enc_dir), max_length=int(ident["max_length"]),
                      precision=settings.serving.precision,
                      normalize=bool(ident["normalize"]), name="hf")
    t0 = time.perf_counter()
    test_texts = snap.part("test").texts
    test_emb = tuned.encode(test_texts)
    timings["encode_test"] = time.perf_counter() - t0
    gate_emb = {tuned.identity["fingerprint"]: test_emb}
    if base is not None:  # the champion's side of the gate, from the cache
        cache = EmbeddingCache(settings.database_url, base.encoder)
        try:
            gate_emb[base.encoder.identity["fingerprint"]] = cache.embed(test_texts)[0]
        finally:
            cache.close()
    return _Fitted(heads=heads, encoder=tuned, test_emb=test_emb, gate_emb=gate_emb,
                   bundle=True, history=history, restarts=restarts,
                   val_emb=tuned.encode(snap.part("val").texts))


def _new_model(fit: _Fitted, snap: Snapshot, keys: list[str], base: ModerationModel | None,
               opts: RetrainOptions, run_name: str, scores: np.ndarray,
               metrics: dict[str, dict[str, Any]], curves: dict[str, Any],
               timings: dict[str, float]) -> ModerationModel:
    test = snap.part("test")
    return ModerationModel(encoder=fit.encoder, heads=fit.heads, metadata={
        "kind": f"retrain-{opts.mode}",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "categories": keys,
        "base_version": base.metadata.get("version") if base else None,
        "data": snap.summary() | {"split": "connected groups (session, user, seed group, "
                                           "text) hashed: 20% test, 10% validation"},
        "metrics": metrics, "curves": curves, "history": fit.history,
        "scoring_check": {"texts": test.texts[:16],
                          "scores": np.round(scores[:16], 6).tolist()},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "train_run": run_name,
    })


def _fit_cascade(model: ModerationModel, fit: _Fitted, snap: Snapshot, scores: np.ndarray,
                 say: Say) -> None:
    """The new version's cascade first stage (``training.cascade``); without one (a head
    with one class only in the training split) the version serves with the cascade off."""
    if fit.val_emb is None:
        return
    try:
        stage = fit_for_model(
            model, snap.data, snap.split == "train",
            (np.flatnonzero(snap.split == "val"), fit.heads.score(fit.val_emb)),
            (np.flatnonzero(snap.split == "test"), scores))
    except ModelError as err:
        say(f"No cascade first stage for this version (it serves every item with the full "
            f"model): {err}")
        return
    say(f"Cascade first stage: decides {stage.report['first_stage_share']:.0%} of the "
        "held-out items")


def _register(registry: ModelRegistry, model: ModerationModel, model_dir: Path, fit: _Fitted,
              snap: Snapshot, policy: PolicySet, opts: RetrainOptions, run_name: str,
              run_id: str, scores: np.ndarray, metrics: dict[str, dict[str, Any]],
              timings: dict[str, float]) -> str:
    """Log the saved model as the new @challenger version of the run; returns the version."""
    flat = {f"{k}.{n}": float(v) for k, e in metrics.items() for n, v in e.items()
            if isinstance(v, (int, float)) and v is not None}
    flat |= {f"timing.{k}_s": float(v) for k, v in timings.items()}
    if fit.cache_info:
        flat |= {"cache.hits": fit.cache_info["hits"],
                 "cache.encoded": fit.cache_info["encoded"]}
    info = registry.log_version(
        model_dir, run_name=run_name, run_id=run_id,
        params={"mode": opts.mode, "workers": opts.workers, "n_items": len(snap.data),
                "n_labelled_items": snap.n_labelled_items,
                "base_version": model.metadata["base_version"],
                "encoder": fit.encoder.identity["name"], "restarts": fit.restarts,
                **{f"heads.{k}": v for k, v in asdict(opts.heads).items()},
                **({f"finetune.{k}": v for k, v in asdict(opts.finetune).items()}
                   if opts.mode == "full" else {})},
        metrics=flat,
        tags={"bastion.kind": f"retrain-{opts.mode}",
              "bastion.data_fingerprint": snap.fingerprint,
              "bastion.encoder_fingerprint": fit.encoder.identity["fingerprint"],
              "bastion.train_run": run_name,
              "bastion.reason": opts.reason or "manual"},
        alias=CHALLENGER,
        policy=policy.model_dump(mode="json", exclude_none=True),
        extra_metrics=tenant_metrics(model, snap.part("test"), scores, policy),
    )
    return info.version


def _gate(settings: Settings, policy: PolicySet, opts: RetrainOptions, version: str,
          snap: Snapshot, gate_emb: dict[str, np.ndarray], run_name: str
          ) -> tuple[bool, bool, str]:
    """Gate (and, if the options say so, promote) the new version on the snapshot's held-out
    split: (promoted, passed, the report as a table)."""
    lifecycle = Lifecycle(settings, policy, eval_data=snap.part("test"), embeddings=gate_emb)
    try:
        if opts.promote:
            report = lifecycle.promote(version, reason=f"retraining run {run_name}",
                                       actor="bastion retrain").report
            return True, report.passed, report.to_table()
        report = lifecycle.gate(version)
        return False, report.passed, report.to_table()
    except GateRefused as err:
        return False, False, str(err)


def retrain(settings: Settings, policy: PolicySet, opts: RetrainOptions,
            say: Say = lambda _m: None) -> RetrainResult:
    """Run one retraining end to end (see the module docstring): snapshot, MLflow run, train
    (heads or full), evaluate, register as @challenger, gate (and promote).

    Raises:
        RetrainError: training failed (nothing registered; the MLflow run is FAILED), or this
            exact run (same data, same configuration) is already a registered version.
    """
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    snap, run_name = _snapshot_for_run(settings, policy, opts, say, timings)
    start_ray(settings)
    base = _base_model(settings, say)
    encoder: Encoder = base.encoder if base else create_encoder(
        "minilm", precision=settings.serving.precision)
    keys = list(snap.data.categories) + [k for k in (base.heads.keys if base else [])
                                         if k not in snap.data.categories]
    snap.data = snap.data.with_columns(keys)
    registry = ModelRegistry(settings)
    run_id = _open_run(registry, snap, run_name, opts, say)
    try:
        with tempfile.TemporaryDirectory(prefix="bastion-retrain-") as tmp:
            model_dir = Path(tmp) / "bastion"
            fit = (_fit_heads_mode(settings, snap, keys, encoder, base, opts, run_name, say,
                                   timings) if opts.mode == "heads" else
                   _fit_full_mode(settings, snap, keys, encoder, base, opts, run_name, run_id,
                                  model_dir, say, timings))
            test = snap.part("test")
            scores = fit.heads.score(fit.test_emb)
            metrics, curves = evaluate_heads(scores, test.targets, test.mask, fit.heads.keys)
            timings["train_total"] = time.perf_counter() - t_all
            model = _new_model(fit, snap, keys, base, opts, run_name, scores, metrics, curves,
                               timings)
            _fit_cascade(model, fit, snap, scores, say)
            model.save(model_dir, bundle_encoder=fit.bundle)
            say("Registering the new version as @challenger...")
            version = _register(registry, model, model_dir, fit, snap, policy, opts, run_name,
                                run_id, scores, metrics, timings)
    except BaseException as err:  # KeyboardInterrupt too: the run must not stay RUNNING
        registry.fail_run(run_id, f"{type(err).__name__}: {err}")
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        raise RetrainError(f"retraining run {run_name} failed; nothing was registered and "
                           f"@champion is untouched: {type(err).__name__}: {err}") from err
    say(f"Registered version {version}; running the promotion gate on the held-out split...")
    t0 = time.perf_counter()
    promoted, passed, table = _gate(settings, policy, opts, version, snap, fit.gate_emb,
                                    run_name)
    timings["gate"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    return RetrainResult(
        run_id=run_id, run_name=run_name, mode=opts.mode, version=version, promoted=promoted,
        gate_passed=passed, gate_table=table, snapshot=snap.summary(), metrics=metrics,
        timings_s={k: round(v, 2) for k, v in timings.items()}, cache=fit.cache_info,
        history=fit.history,
    )
