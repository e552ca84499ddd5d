"""Full multi-task fine-tuning on Ray Train: the backbone and every head, trained together.

``TorchTrainer`` runs :func:`train_loop` on ``--workers N`` workers (DDP over gloo on CPUs,
NCCL on GPUs). Ray Data streams each worker its shard of the training split; the validation
split is scored by all workers and reduced. The loss is the heads' masked, soft-target,
confidence-weighted binary cross-entropy over every tenant's categories, with rare
categories up-weighted (``training.heads.pos_weights``). The backbone and the heads have
their own learning rates, under linear warm-up and linear decay; training stops early when
the validation loss stops improving, and the best epoch's weights are the result.

Every epoch ends in a checkpoint (model, optimiser, schedule, best weights, history). A
worker that dies is replaced and the run resumes from the latest checkpoint
(``FailureConfig``); a driver that dies is resumed by running the same command again: the
run's name is derived from its data and configuration, and Ray Train picks up the run's
latest checkpoint from its storage path.
"""

from __future__ import annotations

import json
import math
import pickle
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch
from mlflow.tracking import MlflowClient
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer
from transformers import AutoModel, AutoTokenizer

from bastion.core.errors import BastionError

__all__ = ["CheckpointError", "FinetuneConfig", "FinetuneResult", "load_checkpoint_file",
           "run_finetune", "train_loop"]


class CheckpointError(BastionError):
    """A checkpoint that cannot be read back safely."""


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 3
    batch_size: int = 32  # per worker
    lr_backbone: float = 3e-5
    lr_heads: float = 2e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_length: int = 128
    patience: int = 1  # epochs without a better validation loss before stopping
    min_delta: float = 1e-4
    max_pos_weight: float = 10.0
    seed: int = 0
    max_steps_per_epoch: int = 0  # 0: the whole shard; >0 caps it (smoke runs, benchmarks)


@dataclass
class FinetuneResult:
    encoder_dir: Path  # a Hugging Face directory: fine-tuned backbone + tokenizer
    weight: np.ndarray  # heads (dim, n_heads)
    bias: np.ndarray
    history: list[dict[str, Any]]
    best_epoch: int
    checkpoint_path: str
    restarts: int


class _Net(torch.nn.Module):
    """Backbone + mean pooling (+ L2 norm) + one linear layer for all heads."""

    def __init__(self, path: str, n_heads: int, normalize: bool) -> None:
        super().__init__()
        self.backbone = AutoModel.from_pretrained(path)
        self.normalize = normalize
        # the pooler (BERT's [CLS] layer) is unused by mean pooling: frozen, so DDP does not
        # wait for its gradients, and kept, so the saved backbone stays complete
        for name, p in self.backbone.named_parameters():
            if name.startswith("pooler."):
                p.requires_grad_(False)
        self.heads = torch.nn.Linear(self.backbone.config.hidden_size, n_heads)

    @classmethod
    def build(cls, path: str, n_heads: int, normalize: bool) -> _Net:
        return cls(path, n_heads, normalize)

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        hidden = self.backbone(input_ids=input_ids,
                               attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return self.heads(pooled)


def _masked_loss(logits: Any, y: Any, w: Any, pos_weight: Any) -> tuple[Any, Any]:
    """(sum of weighted per-label losses, sum of weights): reduce across workers, then divide."""
    per = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, y, reduction="none", pos_weight=pos_weight)
    return (per * w).sum(), w.sum()


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker function (runs on every worker)."""
    cfg = FinetuneConfig(**config["finetune"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = int(config.get("threads_per_worker") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed + rank)
    tokenizer = AutoTokenizer.from_pretrained(config["encoder_path"])
    net = _Net.build(config["encoder_path"], len(config["head_keys"]), config["normalize"])
    if config.get("init_heads") is not None:
        w0, b0 = config["init_heads"]
        with torch.no_grad():
            net.heads.weight.copy_(torch.from_numpy(np.asarray(w0, np.float32).T))
            net.heads.bias.copy_(torch.from_numpy(np.asarray(b0, np.float32)))
    model = ray.train.torch.prepare_model(net)
    device = ray.train.torch.get_device()
    core: Any = model.module if hasattr(model, "module") else model
    opt = torch.optim.AdamW([
        {"params": [p for p in core.backbone.parameters() if p.requires_grad],
         "lr": cfg.lr_backbone},
        {"params": core.heads.parameters(), "lr": cfg.lr_heads},
    ], weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, config["n_train"] // (cfg.batch_size * world))
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, int(total * cfg.warmup_fraction))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    pos_weight = torch.tensor(config["pos_weight"], dtype=torch.float32, device=device)

    state: dict[str, Any] = {"epoch": 0, "best": math.inf, "bad": 0, "best_epoch": -1,
                             "history": [], "restarts": 0}
    best_weights: dict[str, Any] | None = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            saved = load_checkpoint_file(Path(d) / "state.pt", device)
            core.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
            state = _meta(saved)
            best_weights = load_checkpoint_file(Path(d) / "best.pt", device)
        state["restarts"] += 1
        state["history"].append({"event": "resumed", "from_epoch": state["epoch"],
                                 "at": time.time()})

    def batches(shard: Any, shuffle: bool, epoch: int) -> Any:
        kw: dict[str, Any] = {"batch_size": cfg.batch_size, "batch_format": "numpy"}
        if shuffle:
            kw.update(local_shuffle_buffer_size=cfg.batch_size * 16,
                      local_shuffle_seed=cfg.seed * 1000 + epoch, drop_last=True)
        for b in shard.iter_batches(**kw):
            enc = tokenizer([str(t) for t in b["text"]], truncation=True,
                            max_length=cfg.max_length, padding=True, return_tensors="pt")
            yield (enc["input_ids"].to(device), enc["attention_mask"].to(device),
                   torch.from_numpy(np.stack(b["y"]).astype(np.float32)).to(device),
                   torch.from_numpy(np.stack(b["w"]).astype(np.float32)).to(device))

    def reduce(*values: float) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64)
        if world > 1:
            torch.distributed.all_reduce(t)
        return [float(v) for v in t]

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    while state["epoch"] < cfg.epochs and state["bad"] < cfg.patience:
        epoch = state["epoch"]
        model.train()
        t0 = time.perf_counter()
        loss_sum = weight_sum = 0.0
        n_examples = steps = 0
        for ids, att, y, w in batches(train_shard, True, epoch):
            if steps >= steps_per_epoch:
                break  # every worker takes the same number of steps (DDP)
            loss_num, loss_den = _masked_loss(model(ids, att), y, w, pos_weight)
            loss = loss_num / loss_den.clamp(min=1e-6)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            loss_sum += float(loss_num.detach())
            weight_sum += float(loss_den)
            n_examples += int(ids.shape[0])
            steps += 1
            if rank == 0 and steps % max(1, steps_per_epoch // 5) == 0:
                print(json.dumps({"bastion": "progress", "epoch": epoch + 1, "step": steps,
                                  "steps": steps_per_epoch,
                                  "train_loss": round(loss_sum / max(weight_sum, 1e-9), 5)}),
                      flush=True)
        train_s = time.perf_counter() - t0
        model.eval()
        v_num = v_den = 0.0
        with torch.no_grad():
            for ids, att, y, w in batches(val_shard, False, epoch):
                a, b = _masked_loss(model(ids, att), y, w, pos_weight)
                v_num, v_den = v_num + float(a), v_den + float(b)
        loss_sum, weight_sum, v_num, v_den, n_all = reduce(
            loss_sum, weight_sum, v_num, v_den, float(n_examples))
        val_loss = v_num / max(v_den, 1e-9)
        improved = val_loss < state["best"] - cfg.min_delta
        if improved:
            state.update(best=val_loss, bad=0, best_epoch=epoch)
            best_weights = {k: t.detach().clone() for k, t in core.state_dict().items()}
        else:
            state["bad"] += 1
        state["epoch"] = epoch + 1
        stop = state["bad"] >= cfg.patience
        metrics = {
            "epoch": epoch + 1, "train_loss": loss_sum / max(weight_sum, 1e-9),
            "val_loss": val_loss, "best_val_loss": state["best"],
            "examples_per_s": n_all / max(train_s, 1e-9), "examples": n_all,
            "lr_backbone": sched.get_last_lr()[0], "early_stop": stop,
            "restarts": state["restarts"],
        }
        state["history"].append({k: v for k, v in metrics.items()} | {"at": time.time()})
        if rank == 0:
            print(json.dumps({"bastion": "epoch", **metrics}), flush=True)
            _log_live(config.get("mlflow"), metrics, epoch + 1)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                # tensors and primitive containers only, so weights_only=True reads them back;
                # the run's bookkeeping travels as JSON text (json writes inf as Infinity)
                meta = json.dumps(state, default=float)
                torch.save({"model": core.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "meta": meta},
                           Path(tmp) / "state.pt")
                torch.save(best_weights, Path(tmp) / "best.pt")
                ckpt = Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt,
                             checkpoint_dir_name=f"checkpoint_epoch_{epoch + 1:03d}")
        if stop:
            break


def _meta(saved: dict[str, Any]) -> dict[str, Any]:
    """The run's bookkeeping: JSON text; a checkpoint written before that holds the plain dict
    (primitives only, which weights_only=True loads as well)."""
    meta = saved["meta"]
    return json.loads(meta) if isinstance(meta, str) else dict(meta)


def load_checkpoint_file(path: Path, map_location: Any) -> Any:
    """A checkpoint file read with ``weights_only=True``: tensors and primitive containers
    only, so a tampered checkpoint in shared storage cannot run code when it is resumed.

    Raises:
        CheckpointError: the file holds anything else (e.g. a pickled object).
    """
    try:
        return torch.load(path, weights_only=True, map_location=map_location)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused, it holds more than tensors and plain containers "
            f"(weights_only=True): {str(err).splitlines()[0]}; delete the run's checkpoints "
            "to train from scratch") from None


def _log_live(target: dict[str, str] | None, metrics: dict[str, Any], step: int) -> None:
    """Per-epoch metrics into the MLflow run while it trains (progress a person can watch)."""
    if not target:
        return
    client = MlflowClient(tracking_uri=target["uri"])
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            client.log_metric(target["run_id"], f"train.{k}", float(v), step=step)


def run_finetune(
    *,
    encoder_path: str,
    normalize: bool,
    head_keys: list[str],
    train: Any,
    val: Any,
    n_train: int,
    pos_weight: np.ndarray,
    cfg: FinetuneConfig,
    storage_path: str,
    run_name: str,
    workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    max_failures: int = 2,
    init_heads: tuple[np.ndarray, np.ndarray] | None = None,
    mlflow_target: dict[str, str] | None = None,
    out_dir: Path,
) -> FinetuneResult:
    """Run the fine-tuning on Ray Train and write the best epoch's backbone to ``out_dir``.

    Args:
        train, val: Ray Datasets with columns ``text``, ``y`` and ``w`` (targets, weights).
        storage_path, run_name: where checkpoints live; the same pair resumes a run.
        max_failures: worker failures to recover from (from the latest checkpoint).
    """
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "finetune": asdict(cfg), "encoder_path": encoder_path, "normalize": normalize,
            "head_keys": head_keys, "n_train": n_train,
            "pos_weight": [float(v) for v in pos_weight],
            "threads_per_worker": max(1, int(cpus_per_worker)),
            "init_heads": None if init_heads is None else (init_heads[0].tolist(),
                                                           init_heads[1].tolist()),
            "mlflow": mlflow_target,
        },
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker},
        ),
        run_config=RunConfig(  # type: ignore[call-arg]  # (mypy sees Ray Train v1's class)
            name=run_name, storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
        datasets={"train": train, "val": val},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"fine-tuning run {run_name} ended without a checkpoint")
    out_dir.mkdir(parents=True, exist_ok=True)
    with result.checkpoint.as_directory() as d:
        saved = load_checkpoint_file(Path(d) / "state.pt", "cpu")
        best = load_checkpoint_file(Path(d) / "best.pt", "cpu")
    net = _Net.build(encoder_path, len(head_keys), normalize)
    net.load_state_dict(best)
    net.backbone.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(encoder_path).save_pretrained(out_dir)
    meta = _meta(saved)
    return FinetuneResult(
        encoder_dir=out_dir,
        weight=net.heads.weight.detach().numpy().T.copy(),
        bias=net.heads.bias.detach().numpy().copy(),
        history=meta["history"], best_epoch=int(meta["best_epoch"]) + 1,
        checkpoint_path=str(result.checkpoint.path), restarts=int(meta["restarts"]),
    )

