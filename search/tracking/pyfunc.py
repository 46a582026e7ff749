"""Package a trial's checkpoint as an MLflow pyfunc model (models-from-code, no pickle) in its run."""

from __future__ import annotations

import tempfile
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from mlflow.models import ModelSignature
from mlflow.pyfunc import save_model
from mlflow.types.schema import Schema, TensorSpec

from search.tracking.client import Tracker

MODEL_ARTIFACT = "model"
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


def log_pyfunc_model(tracker: Tracker, run_id: str, ckpt_path: Path) -> str:
    """Save the model locally (fixed requirements: no slow inference) and log it under `model/`.

    Loadable as `mlflow.pyfunc.load_model(f"runs:/{run_id}/model")`.
    """
    with tempfile.TemporaryDirectory(prefix="pyfunc-") as tmp, warnings.catch_warnings():
        # MLflow nags about type hints and input examples; the explicit tensor signature covers both.
        warnings.simplefilter("ignore", UserWarning)
        path = Path(tmp) / MODEL_ARTIFACT
        save_model(str(path), python_model=str(CODE_FILE), artifacts={"checkpoint": str(ckpt_path)},
                   code_paths=PACKAGE_DIRS, signature=SIGNATURE, pip_requirements=_requirements())
        tracker.log_artifacts(run_id, path, MODEL_ARTIFACT)
    return f"runs:/{run_id}/{MODEL_ARTIFACT}"
