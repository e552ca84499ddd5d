"""Fine-tuning checkpoints are read with weights_only=True: plain tensors load, a pickled
object is refused before it can run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bastion.training.finetune import CheckpointError, load_checkpoint_file

RAN: list[str] = []


class _Payload:
    """What a tampered checkpoint would carry: unpickling it calls RAN.append."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (RAN.append, ("code ran",))


def test_a_checkpoint_as_written_loads(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    meta = {"epoch": 1, "best": math.inf, "history": [{"val_loss": 0.5, "early_stop": False}]}
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "meta": json.dumps(meta)}, tmp_path / "s.pt")
    saved = load_checkpoint_file(tmp_path / "s.pt", "cpu")
    assert json.loads(saved["meta"]) == meta
    net.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])


def test_a_pickled_object_is_refused(tmp_path: Path) -> None:
    torch.save({"model": {}, "meta": _Payload()}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match=r"state\.pt: refused.*weights_only=True"):
        load_checkpoint_file(tmp_path / "state.pt", "cpu")
    assert RAN == []
