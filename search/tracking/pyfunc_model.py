"""The MLflow pyfunc model, logged as "models from code": MLflow stores this file, not a pickle.

`load_context` rebuilds the UNet from the logged checkpoint with `torch.load(weights_only=True)`;
`predict` takes uint8 RGB images (N, H, W, 3) or one (H, W, 3), of any size, and returns label
maps (N, H, W) uint8. Loading it never needs MLflow's unsafe pickle deserialisation.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel, PythonModelContext


class UNetSegmenter(PythonModel):
    def load_context(self, context: PythonModelContext) -> None:
        from seg.predict import Predictor

        self.predictor = Predictor.from_path(context.artifacts["checkpoint"], device="auto")

    # np.ndarray is a hint MLflow accepts without inferring a schema: the logged signature stays in charge.
    def predict(self, context: PythonModelContext, model_input: np.ndarray,
                params: dict[str, Any] | None = None) -> np.ndarray:
        images = np.asarray(model_input)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 RGB images shaped (N, H, W, 3) or (H, W, 3), got {images.shape}")
        tensors = torch.from_numpy(np.ascontiguousarray(images.astype(np.uint8))).permute(0, 3, 1, 2)  # (N, 3, H, W)
        return np.stack([self.predictor.predict(t).numpy() for t in tensors])  # (N, H, W)


mlflow.models.set_model(UNetSegmenter())
