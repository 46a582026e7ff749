"""Training losses; every one ignores `IGNORE_INDEX` (255) pixels. `train.loss` picks one:

- `ce`: mean cross-entropy over the labelled pixels.
- `ce_weighted`: cross-entropy with a weight per class, the inverse square root of the class's pixel
  frequency in the training masks, scaled so the mean weight of a labelled training pixel is 1
  (the loss keeps plain CE's scale, so learning rates carry over).
- `dice_ce`: CE plus soft Dice loss (1 - mean Dice over the classes present in the batch's labels),
  computed over the whole batch, as nnU-Net does.

`build_loss(name, num_classes, masks)` returns the function `fit` calls as `loss(logits, target)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from seg.config import LOSSES
from seg.data import IGNORE_INDEX

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Added to the Dice numerator and denominator: keeps a class with tiny predictions finite (nnU-Net's 1e-5).
DICE_SMOOTH = 1e-5


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean CE over non-ignored pixels; 0 (not NaN) for a batch that is all ignore.

    logits (B, K, H, W), target (B, H, W) long."""
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp(min=1)


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(w[y] * nll) / sum(w[y]) over non-ignored pixels (PyTorch's weighted mean); 0 when all are ignored."""
    total = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=IGNORE_INDEX, reduction="sum")
    valid = target != IGNORE_INDEX  # (B, H, W)
    # 255 is no index into the weights: clamp it, then mask it out (no host sync).
    pixel_weight = weight[target.clamp(max=weight.numel() - 1)] * valid
    return total / pixel_weight.sum().clamp(min=1e-12)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the classes that have labelled pixels in `target`; 0 when none has.

    Dice of class c = (2 * sum(p_c * t_c) + s) / (sum(p_c) + sum(t_c) + s) over the labelled pixels of
    the whole batch, with p = softmax(logits) and t the one-hot target."""
    k = logits.shape[1]
    valid = (target != IGNORE_INDEX).unsqueeze(1)  # (B, 1, H, W)
    probs = logits.float().softmax(1) * valid  # (B, K, H, W)
    onehot = F.one_hot(torch.where(valid[:, 0], target, 0), k).permute(0, 3, 1, 2) * valid  # (B, K, H, W)
    dims = (0, 2, 3)
    truth = onehot.sum(dims).float()  # (K,) labelled pixels per class
    dice = (2 * (probs * onehot).sum(dims) + DICE_SMOOTH) / (probs.sum(dims) + truth + DICE_SMOOTH)
    # An absent class has no defined Dice: averaging it in would reward predicting nothing.
    present = (truth > 0).float()
    n_present = present.sum()
    return torch.where(n_present > 0, 1 - (dice * present).sum() / n_present.clamp(min=1), 0.0)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return masked_cross_entropy(logits, target) + soft_dice_loss(logits, target)


def class_frequencies(masks: Iterable[torch.Tensor], num_classes: int) -> torch.Tensor:
    """Share of the labelled pixels per class, float64 (K,); 255 and values >= K are not counted."""
    counts = torch.zeros(256, dtype=torch.int64)
    for mask in masks:
        counts += torch.bincount(mask.reshape(-1).long(), minlength=256)
    labelled = counts[:num_classes].double()
    return labelled / labelled.sum().clamp(min=1)


def inverse_sqrt_weights(frequencies: torch.Tensor) -> torch.Tensor:
    """w_c = 1 / sqrt(f_c), scaled so that sum_c f_c * w_c = 1; 0 for a class with no pixels. float32 (K,)."""
    root = frequencies.double().sqrt()
    total = root.sum()
    if total <= 0:
        raise ValueError("class weights need at least one labelled pixel in the training masks")
    weights = torch.where(root > 0, 1.0 / (root * total), torch.zeros_like(root))
    return weights.float()


def build_loss(name: str, num_classes: int, train_masks: Iterable[torch.Tensor] = (),
               device: torch.device | str = "cpu") -> LossFn:
    """The loss `name` (one of LOSSES); `ce_weighted` counts its class weights in `train_masks`."""
    if name == "ce":
        return masked_cross_entropy
    if name == "dice_ce":
        return dice_ce_loss
    if name == "ce_weighted":
        weight = inverse_sqrt_weights(class_frequencies(train_masks, num_classes)).to(device)
        return lambda logits, target: weighted_cross_entropy(logits, target, weight)
    raise ValueError(f"train.loss={name!r}; expected one of {list(LOSSES)}")
