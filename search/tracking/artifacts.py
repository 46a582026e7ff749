"""Artifacts of a completed trial's run: checkpoint, prediction overlays, per-class IoU and confusion
figure. (Its model is a LoggedModel of its own: `search.tracking.pyfunc`.)"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from search.tracking.client import Tracker
from seg.data import SegmentationData
from seg.predict import Predictor, label_image
from seg.train import FitResult

N_OVERLAYS = 4


def log_trial_artifacts(tracker: Tracker, run_id: str, ckpt_path: Path, data: SegmentationData,
                        result: FitResult) -> None:
    predictor = Predictor.from_path(ckpt_path, device="cpu")
    names = predictor.ckpt.class_names
    tracker.log_artifact(run_id, ckpt_path, "checkpoint")
    tracker.log_figure(run_id, overlay_figure(predictor, data), "overlays/val_predictions.png")
    best = result.history[result.best_epoch]
    title = f"IoU per class (mIoU {best.val_miou:.3f}, epoch {best.epoch})"
    tracker.log_figure(run_id, iou_confusion_figure(names, best.iou, result.best_confusion, title),
                       "metrics/iou_confusion.png")
    tracker.log_dict(run_id, {"class_names": list(names), "confusion": [list(r) for r in result.best_confusion]},
                     "metrics/confusion.json")
    plt.close("all")


def overlay_figure(predictor: Predictor, data: SegmentationData, n: int = N_OVERLAYS) -> plt.Figure:
    """Rows of (image, ground truth, prediction overlay) for the first validation images."""
    n = min(n, len(data.val))
    k = predictor.ckpt.config.model.num_classes
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    for row in range(n):
        image, truth = data.val.images[row], data.val.masks[row]
        pred = predictor.predict(image)
        rgb = image.permute(1, 2, 0).numpy()  # (H, W, 3)
        panels = [rgb, np.asarray(label_image(truth, k).convert("RGB")), _blend(rgb, pred, k)]
        for ax, panel, title in zip(axes[row], panels, ("image", "ground truth", "prediction")):
            ax.imshow(panel)
            ax.set_title(title)
            ax.axis("off")
    fig.tight_layout()
    return fig


def _blend(rgb: np.ndarray, label: torch.Tensor, k: int) -> np.ndarray:
    colour = np.asarray(label_image(label, k).convert("RGB"), dtype=np.float32)
    return (0.5 * rgb + 0.5 * colour).astype(np.uint8)


def iou_confusion_figure(names: list[str] | tuple[str, ...], ious: list[float | None], confusion: np.ndarray,
                         title: str) -> plt.Figure:
    """Per-class IoU bars (absent classes at 0) and the row-normalised (truth, prediction) confusion matrix."""
    mat = np.asarray(confusion, dtype=np.float64)
    norm = mat / np.maximum(mat.sum(1, keepdims=True), 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    ax1.barh(range(len(names)), [v if v is not None else 0.0 for v in ious], color="#4c72b0")
    ax1.set_yticks(range(len(names)), names)
    ax1.invert_yaxis()
    ax1.set_xlim(0, 1)
    ax1.set_xlabel("IoU")
    ax1.set_title(title)
    im = ax2.imshow(norm, vmin=0, vmax=1, cmap="viridis")
    ax2.set_xticks(range(len(names)), names, rotation=90)
    ax2.set_yticks(range(len(names)), names)
    ax2.set_xlabel("prediction")
    ax2.set_ylabel("truth")
    ax2.set_title("confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax2)
    fig.tight_layout()
    return fig
