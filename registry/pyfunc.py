"""MLflow pyfunc wrapper, so ``mlflow.pyfunc.load_model("models:/bastion-moderation@champion")``
scores texts like serving does."""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

__all__ = ["BastionPyfunc"]


class BastionPyfunc(PythonModel):
    """Input: a DataFrame with a ``text`` column. Output: one probability column per head."""

    def load_context(self, context: Any) -> None:
        from core.model import ModerationModel

        self.model = ModerationModel.load(context.artifacts["bastion"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        _, scores = self.model.score(model_input["text"].astype(str).tolist())
        return pd.DataFrame(scores, columns=self.model.head_keys)
