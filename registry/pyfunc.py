"""MLflow pyfunc wrapper, so ``mlflow.pyfunc.load_model("models:/bastion-moderation@champion")``
scores texts like serving does.

Versions registered before the project moved under one ``bastion`` namespace pickled this class
as ``registry.pyfunc.BastionPyfunc``. Nothing named ``registry`` is installed any more, so
:func:`load_pyfunc` resolves that old path to this module while MLflow unpickles; serving never
unpickles (it reads the ``bastion`` artifact directly), so old versions serve unchanged.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PyFuncModel, PythonModel

from bastion.core.image_heads import ImageHeads
from bastion.core.model import ModerationModel

__all__ = ["BastionPyfunc", "ImageHeadsPyfunc", "LEGACY_MODULES", "legacy_module_paths",
           "load_pyfunc"]

# Old import name -> its module now. Only what a logged version's pickle can name.
LEGACY_MODULES = {"registry": "bastion.registry", "registry.pyfunc": "bastion.registry.pyfunc"}


class BastionPyfunc(PythonModel):
    """Input: a DataFrame with a ``text`` column. Output: one probability column per head."""

    def load_context(self, context: Any) -> None:
        self.model = ModerationModel.load(context.artifacts["bastion"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        _, scores = self.model.score(model_input["text"].astype(str).tolist())
        return pd.DataFrame(scores, columns=self.model.head_keys)


class ImageHeadsPyfunc(PythonModel):
    """Input: a DataFrame of image-backbone embeddings, one column per dimension (``e0`` ...).
    Output: one probability column per image category."""

    def load_context(self, context: Any) -> None:
        self.model = ImageHeads.load(context.artifacts["bastion"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return pd.DataFrame(self.model.score(model_input.to_numpy(dtype="float32")),
                            columns=self.model.categories)


@contextmanager
def legacy_module_paths() -> Iterator[None]:
    """While inside, the pre-namespace module paths of :data:`LEGACY_MODULES` import as their
    ``bastion.`` modules; afterwards they are gone again (``import registry`` fails)."""
    added = []
    for old, new in LEGACY_MODULES.items():
        if old not in sys.modules:
            sys.modules[old] = importlib.import_module(new)
            added.append(old)
    try:
        yield
    finally:
        for old in added:
            sys.modules.pop(old, None)


def load_pyfunc(model_uri: str) -> PyFuncModel:
    """``mlflow.pyfunc.load_model`` that also loads versions logged under the old module paths."""
    with legacy_module_paths():
        return mlflow.pyfunc.load_model(model_uri)
