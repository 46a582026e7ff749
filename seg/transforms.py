"""Joint image/mask pipelines built from a `TransformConfig`, on `torchvision.transforms.v2`.

Images travel as `tv_tensors.Image` (uint8, (3, H, W)) and masks as `tv_tensors.Mask` (uint8,
(H, W)), so every geometric op is applied to both with the same parameters; v2 resizes masks with
nearest interpolation, and every fill below gives masks 255 (= ignore) and images 0.
Normalisation is not a CPU step: `Normalize` runs on the device on the uint8 batch, which moves
4x fewer bytes to the GPU and keeps the loader cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from seg.config import TransformConfig
from seg.data import IGNORE_INDEX

FILL = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}

Pipeline = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[tv_tensors.Image, tv_tensors.Mask]]


def _resize(cfg: TransformConfig) -> list[v2.Transform]:
    if cfg.resize is None:
        return []
    return [v2.Resize(list(cfg.resize), antialias=True)]


def _augment(cfg: TransformConfig) -> list[v2.Transform]:
    """Random geometry and colour; identity settings add no op (and no cost)."""
    ops: list[v2.Transform] = []
    # Crop before the affine warp: warping only the crop costs (crop/image)^2 of warping the image.
    if cfg.crop_mode == "random":
        ops.append(v2.RandomCrop(cfg.crop_size, pad_if_needed=True, fill=FILL))
    if cfg.rotation > 0 or (cfg.scale_min, cfg.scale_max) != (1.0, 1.0):
        ops.append(v2.RandomAffine(degrees=cfg.rotation, scale=(cfg.scale_min, cfg.scale_max), fill=FILL))
    if cfg.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(cfg.hflip))
    if cfg.vflip > 0:
        ops.append(v2.RandomVerticalFlip(cfg.vflip))
    if cfg.color_jitter > 0:
        # No hue jitter: the RGB->HSV round trip is ~25% of the whole CPU loader's time.
        s = cfg.color_jitter
        ops.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s))
    return ops


def _compose(ops: list[v2.Transform]) -> Pipeline:
    # v2.Compose refuses an empty list; a config without augmentation is valid.
    return v2.Compose(ops) if ops else _identity


def build_train_transform(cfg: TransformConfig) -> Pipeline:
    """Resize -> crop -> scale/rotate -> flips -> colour (identity settings add no op)."""
    return _compose(_resize(cfg) + _augment(cfg))


def build_eval_transform(cfg: TransformConfig) -> Pipeline:
    """Resize policy only: validation sees whole images (padded per batch with 255 masks)."""
    return _compose(_resize(cfg))


def _identity(image: tv_tensors.Image, mask: tv_tensors.Mask) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    return image, mask


def five_crop_box(height: int, width: int, size: int, view: int) -> tuple[int, int]:
    """(top, left) of view 0..4 of FiveCrop: top-left, top-right, bottom-left, bottom-right, centre."""
    if size > height or size > width:
        raise ValueError(f"five-crop size {size} is larger than the resized image {height}x{width}")
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size)]
    if view < 4:
        return corners[view]
    return (height - size) // 2, (width - size) // 2


def five_crop_view(image: tv_tensors.Image, mask: tv_tensors.Mask, size: int,
                   view: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """One of the five crops, cut identically from image and mask."""
    top, left = five_crop_box(image.shape[-2], image.shape[-1], size, view)
    return TF.crop(image, top, left, size, size), TF.crop(mask, top, left, size, size)


class FiveCropTrain:
    """Train pipeline for the report's preprocessing: resize, one of five crops, then augment."""

    def __init__(self, cfg: TransformConfig) -> None:
        self.size = cfg.crop_size
        self.resize = _compose(_resize(cfg))
        self.augment = _compose(_augment(cfg))

    def __call__(self, image: tv_tensors.Image, mask: tv_tensors.Mask,
                 view: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        image, mask = self.resize(image, mask)
        image, mask = five_crop_view(image, mask, self.size, view)
        return self.augment(image, mask)


def pad_collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack samples of different sizes: images padded with 0, masks with 255 (ignored everywhere)."""
    h = max(img.shape[-2] for img, _ in batch)
    w = max(img.shape[-1] for img, _ in batch)
    images = torch.zeros((len(batch), batch[0][0].shape[0], h, w), dtype=torch.uint8)  # (B, 3, H, W)
    masks = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.uint8)  # (B, H, W)
    for i, (img, mask) in enumerate(batch):
        images[i, :, : img.shape[-2], : img.shape[-1]] = img
        masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
    return images, masks


class Normalize(nn.Module):
    """uint8 (B, 3, H, W) -> float (x/255 - mean) / std, run on the batch's device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        # A constant channel has std 0; the floor keeps it finite instead of dividing by zero.
        std_t = torch.tensor(std, dtype=torch.float32).clamp(min=1e-3)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255.0 - self.mean) / self.std
