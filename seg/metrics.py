"""Streaming confusion matrix, mIoU, per-class IoU and pixel accuracy (torchvision-references style).

mIoU is the mean IoU over the classes whose union (ground truth + prediction pixels) is non-empty:
a class absent from both the labels and the predictions of the evaluated set says nothing about
the model, so it is left out rather than counted as 0 or 1. Pixels equal to `ignore_index` are
dropped before counting, exactly as the loss (`CrossEntropyLoss(ignore_index=255)`) and the
padding (masks padded with 255) treat them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seg.data import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates a (num_classes, num_classes) matrix, rows = truth, columns = prediction.

    Lives on the model's device; `update` does no host sync, so it can run every step.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        """target, pred: integer tensors of the same shape, e.g. (B, H, W)."""
        if target.shape != pred.shape:
            raise ValueError(f"target shape {tuple(target.shape)} != prediction shape {tuple(pred.shape)}")
        n = self.num_classes
        target = target.flatten().long()
        pred = pred.flatten().long()
        # Out-of-range predictions cannot come from argmax; dropping them avoids a host sync.
        keep = (target != self.ignore_index) & (target >= 0) & (target < n) & (pred >= 0) & (pred < n)
        # One bincount over the flattened (truth, prediction) pair index; dropped pixels go to an extra
        # bin n*n (a where instead of boolean indexing, whose data-dependent size syncs with the host).
        idx = torch.where(keep, n * target + pred, n * n)
        self.mat += torch.bincount(idx, minlength=n * n + 1)[: n * n].reshape(n, n)

    def reset(self) -> None:
        self.mat.zero_()

    def compute(self) -> SegScores:
        return scores_from_confusion(self.mat)


@dataclass(frozen=True)
class SegScores:
    miou: float
    iou: tuple[float | None, ...]  # None where the class has an empty union
    pixel_accuracy: float
    confusion: tuple[tuple[int, ...], ...] = ()  # rows = truth, columns = prediction


def intersection_and_union(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class (K,): true-positive pixels and the union of label and prediction, from a (K, K) matrix."""
    tp = mat.diag()
    return tp, mat.sum(0) + mat.sum(1) - tp


def iou_from_counts(tp: torch.Tensor, union: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(per-class IoU, present, mIoU): the mean over the classes with a non-empty union."""
    tp, union = tp.double(), union.double()
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    return iou, present, iou[present].mean().item() if present.any() else 0.0


def scores_from_confusion(mat: torch.Tensor) -> SegScores:
    """mIoU over classes with a non-empty union, per-class IoU and pixel accuracy."""
    mat = mat.double().cpu()
    tp, union = intersection_and_union(mat)
    iou, present, miou = iou_from_counts(tp, union)
    total = mat.sum().item()
    acc = tp.sum().item() / total if total else 0.0
    per_class = tuple(v if p else None for v, p in zip(iou.tolist(), present.tolist()))
    confusion = tuple(tuple(int(v) for v in row) for row in mat.long().tolist())
    return SegScores(miou=miou, iou=per_class, pixel_accuracy=acc, confusion=confusion)
