"""One way for a test to say a dependency is missing: skip with a message naming it, except
under ``CI=true``, where ``../shared``, PostgreSQL and Chromium are provided and a missing one
must fail the run instead of passing it by skipping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["in_ci", "missing", "dev_data"]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(what: str, fix: str) -> None:
    """Skip the calling test (fail it under CI=true): ``what`` is absent; ``fix`` says how to
    provide it."""
    message = f"needs {what}, which is not here: {fix}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing dependency fails the run)", pytrace=False)
    pytest.skip(message)


def dev_data(*rels: str) -> Path:
    """The development data folder (``../shared/data``), with ``rels`` inside it; else skip
    (fail in CI)."""
    from bastion.training.datasets import dev_data_dir

    base = dev_data_dir()
    absent = [r for r in rels if base is None or not (base / r).exists()]
    if base is None or absent:
        missing("the development data sets (../shared/data" + (f": {', '.join(absent)}"
                if base is not None else "") + ")",
                "put the shared/ folder beside the checkout or set BASTION_DEV_DATA")
    assert base is not None
    return base
