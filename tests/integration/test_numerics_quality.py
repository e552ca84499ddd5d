"""Every encoder numerics this machine can run keeps the starter heads' held-out AUROC within
0.005 of fp32's, per category (issue 14). A fixed sample of the held-out split by default
(``BASTION_NUMERICS_HELDOUT``: how many items, ``all`` for the whole split;
bench/numerics.py measures the whole split)."""

from __future__ import annotations

import os

import pytest

from bastion.core.numerics import create_numerics, numerics_names
from bastion.training.numerics_check import (
    MAX_AUROC_DROP,
    HeldOut,
    auroc_by_category,
    held_out,
    load_starter,
)
from tests._requires import dev_data

pytestmark = pytest.mark.model

DEFAULT_SAMPLE = 1500  # ~1 min per numerics on two busy cores


@pytest.fixture(scope="module")
def split() -> HeldOut:
    dev_data("davidson-hate-offensive", "toxic-spans")
    raw = os.environ.get("BASTION_NUMERICS_HELDOUT", str(DEFAULT_SAMPLE))
    return held_out(None if raw == "all" else int(raw))


@pytest.fixture(scope="module")
def fp32(split: HeldOut) -> dict[str, float]:
    return auroc_by_category(load_starter("fp32"), split)


@pytest.mark.parametrize("name", [n for n in numerics_names() if n != "fp32"])
def test_numerics_keeps_held_out_auroc(name: str, split: HeldOut, fp32: dict[str, float],
                                       ) -> None:
    why = create_numerics(name).available()
    if why is not None:
        pytest.skip(f"{name} cannot run on this machine: {why}")  # by design, also in CI
    got = auroc_by_category(load_starter(name), split)
    assert set(got) == set(fp32)
    drops = {k: round(got[k] - fp32[k], 4) for k in fp32}
    assert all(abs(d) <= MAX_AUROC_DROP for d in drops.values()), (
        f"{name}: held-out AUROC moved by more than {MAX_AUROC_DROP} ({name} minus fp32, "
        f"{len(split.data.texts)} of {split.n_split} held-out items): {drops}")
