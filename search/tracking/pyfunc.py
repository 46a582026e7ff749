"""Package a trial's checkpoint as an MLflow pyfunc model (models-from-code, no pickle): a LoggedModel
linked to the trial's run, with an input example."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc import save_model
from mlflow.types.schema import Schema, TensorSpec

from search.tracking.client import Tracker
from seg.data import SegmentationData

MODEL_ARTIFACT = "model"  # the LoggedModel's name, so `runs:/<run id>/model` finds it
EXAMPLE_SIDE = (27, 35)  # the input example's largest height and width: odd, any size works
CODE_FILE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE_DIRS = [str(Path(__file__).resolve().parents[2] / "seg")]
# Any number of images of any size: (N, H, W, 3) uint8 in, (N, H, W) uint8 out.
SIGNATURE = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
                           outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]))


def _requirements() -> list[str]:
    reqs = []
    for name in ("torch", "torchvision", "numpy", "pillow", "mlflow"):
        try:
            reqs.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return reqs


def input_example(data: SegmentationData) -> np.ndarray:
    """A small odd-sized crop of the first validation image, (1, H, W, 3) uint8: the model page shows it
    (and the request body `mlflow models serve` takes) as the way to call the model."""
    image = data.val.images[0][:, :EXAMPLE_SIDE[0], :EXAMPLE_SIDE[1]]  # (3, H, W)
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())[None]


def log_pyfunc_model(tracker: Tracker, experiment_id: str, run_id: str, ckpt_path: Path, example: np.ndarray,
                     params: Mapping[str, Any], tags: Mapping[str, Any], step: int) -> str:
    """Log the checkpoint as a LoggedModel named `model` from `run_id` (one of the run's outputs, at
    `step`) and return its id. The model is saved locally with fixed requirements (no slow
    inference), then uploaded. Loadable as `models:/<model id>` or `runs:/<run id>/model`.
    """
    model_id, location = tracker.create_logged_model(experiment_id, run_id, MODEL_ARTIFACT, params, tags)
    with tempfile.TemporaryDirectory(prefix="pyfunc-") as tmp, warnings.catch_warnings():
        # MLflow nags about type hints; the explicit tensor signature is in charge.
        warnings.simplefilter("ignore", UserWarning)
        path = Path(tmp) / MODEL_ARTIFACT
        metadata = Model(artifact_path=location, run_id=run_id, model_uuid=model_id, model_id=model_id)
        save_model(str(path), python_model=str(CODE_FILE), artifacts={"checkpoint": str(ckpt_path)},
                   code_paths=PACKAGE_DIRS, signature=SIGNATURE, input_example=example,
                   pip_requirements=_requirements(), mlflow_model=metadata)
        tracker.finish_logged_model(model_id, run_id, path, step)
    return model_id
