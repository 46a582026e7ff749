"""The per-epoch metrics a trial (or a confirm retrain) logs to MLflow, with class names made safe
for MLflow's metric names (`iou/<class>`)."""

from __future__ import annotations

import re

from seg.train import EpochResult


def epoch_metrics(record: EpochResult, class_names: tuple[str, ...]) -> dict[str, float]:
    """The per-epoch metric dict: losses, mIoU, per-class IoU, lr, seconds and images/s."""
    metrics = {
        "train_loss": record.train_loss,
        "val_loss": record.val_loss,
        "val_miou": record.val_miou,
        "val_pixel_accuracy": record.val_pixel_accuracy,
        "lr": record.lr,
        "epoch_seconds": record.seconds,
        "images_per_s": record.images_per_s,
        "data_wait_fraction": record.data_seconds / max(record.train_seconds, 1e-9),
    }
    for name, iou in zip(metric_class_names(class_names), record.iou):
        if iou is not None:
            metrics[f"iou/{name}"] = iou
    return metrics


def metric_class_names(class_names: tuple[str, ...]) -> list[str]:
    """Class names as MLflow metric-name parts: characters MLflow refuses (or that would nest the
    name, like '/') become '_', and a name that then repeats another gets its index appended."""
    names: list[str] = []
    for index, name in enumerate(class_names):
        safe = re.sub(r"[^\w.\- ]", "_", name).strip() or str(index)
        safe = "_" if safe in (".", "..") else safe
        names.append(f"{safe}_{index}" if safe in names else safe)
    return names
