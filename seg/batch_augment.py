"""Whole-batch augmentation on tensors, the device data path's twin of the per-sample v2 pipeline.

Random crop, scale/rotation, flips and colour jitter as batched tensor ops with per-sample random
draws from one generator (device tensors on CUDA; the same ops run on CPU tensors). Image and mask
share every gather and sampling grid, so they stay aligned by construction; see `seg.gpu_data`
for where they run and how they differ from torchvision's per-sample order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from seg.config import TransformConfig
from seg.data import IGNORE_INDEX


def random_crop(images: torch.Tensor, masks: torch.Tensor, sizes: torch.Tensor, size: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random `size` x `size` window inside each sample's own (h, w), by one gather.

    images uint8 (B, 3, H, W), masks (B, H, W), sizes (B, 2) with H, W >= size (the store is padded
    to at least `size`, so a sample smaller than the crop comes with 0 / 255 fill, like pad_if_needed).
    """
    b, _, h, w = images.shape
    if h < size or w < size:
        raise ValueError(f"batch is {h}x{w}, smaller than the crop {size}; stack the split with min_side={size}")
    dev = images.device
    room = (sizes - size).clamp(min=0) + 1  # (B, 2): number of valid offsets per axis
    offsets = (torch.rand((b, 2), generator=generator, device=dev) * room).long().clamp(max=room - 1)
    ar = torch.arange(size, device=dev)
    rows = offsets[:, 0:1] + ar  # (B, S)
    cols = offsets[:, 1:2] + ar  # (B, S)
    bi = torch.arange(b, device=dev)[:, None, None]
    out_masks = masks[bi, rows[:, :, None], cols[:, None, :]]  # (B, S, S)
    out_images = images[bi[:, None], torch.arange(3, device=dev)[None, :, None, None],
                        rows[:, None, :, None], cols[:, None, None, :]]  # (B, 3, S, S)
    return out_images, out_masks


def random_affine(images: torch.Tensor, masks: torch.Tensor, degrees: float, scale: tuple[float, float],
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate by U(-degrees, degrees) and scale by U(scale) about the centre, one grid for image and mask.

    Nearest sampling for both (v2.RandomAffine's default), so masks keep exact labels; outside the
    source, images get 0 and masks 255.
    """
    b, c, h, w = images.shape
    dev = images.device
    angle = (torch.rand(b, generator=generator, device=dev) * 2 - 1) * math.radians(degrees)
    factor = scale[0] + torch.rand(b, generator=generator, device=dev) * (scale[1] - scale[0])
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    zero = torch.zeros_like(cos)
    # affine_grid maps output to input coordinates: the inverse of "scale by s, rotate by a".
    theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1), torch.stack([sin * w / h, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, [b, c + 1, h, w], align_corners=False)
    # Mask + 1 as a 4th channel: zero padding then marks "outside", which becomes 255.
    stacked = torch.cat([images.float(), masks.float().unsqueeze(1) + 1], 1)
    warped = F.grid_sample(stacked, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    out_masks = warped[:, c].round().long() - 1
    out_masks = torch.where(out_masks < 0, IGNORE_INDEX, out_masks).to(torch.uint8)
    return warped[:, :c].round().clamp(0, 255).to(torch.uint8), out_masks


def random_flip(images: torch.Tensor, masks: torch.Tensor, p: float, horizontal: bool,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each sample with probability p, image and mask together."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    dim = -1 if horizontal else -2
    images = torch.where(flip[:, None, None, None], images.flip(dim), images)
    masks = torch.where(flip[:, None, None], masks.flip(dim), masks)
    return images, masks


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float -> (B, 1, H, W) with torchvision's weights."""
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def color_jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation factors U(max(0, 1-s), 1+s) per sample (no hue, as on CPU)."""
    b = images.shape[0]
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength

    def factor() -> torch.Tensor:
        return (lo + torch.rand(b, generator=generator, device=images.device) * (hi - lo)).view(b, 1, 1, 1)

    x = images.float()
    x = (x * factor()).clamp(0, 255)  # brightness: blend with black
    mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    f = factor()
    x = (f * x + (1 - f) * mean).clamp(0, 255)  # contrast: blend with the mean grey
    f = factor()
    x = (f * x + (1 - f) * _grayscale(x)).clamp(0, 255)  # saturation: blend with the grey image
    return x.to(torch.uint8)


class BatchAugment:
    """The train pipeline of a `TransformConfig` (after resize) as whole-batch ops: crop, affine, flips, colour."""

    def __init__(self, cfg: TransformConfig, generator: torch.Generator) -> None:
        self.cfg = cfg
        self.generator = generator

    def __call__(self, images: torch.Tensor, masks: torch.Tensor,
                 sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, gen = self.cfg, self.generator
        if cfg.crop_mode == "random":
            images, masks = random_crop(images, masks, sizes, cfg.crop_size, gen)
        if cfg.rotation > 0 or (cfg.scale_min, cfg.scale_max) != (1.0, 1.0):
            images, masks = random_affine(images, masks, cfg.rotation, (cfg.scale_min, cfg.scale_max), gen)
        if cfg.hflip > 0:
            images, masks = random_flip(images, masks, cfg.hflip, True, gen)
        if cfg.vflip > 0:
            images, masks = random_flip(images, masks, cfg.vflip, False, gen)
        if cfg.color_jitter > 0:
            images = color_jitter(images, cfg.color_jitter, gen)
        return images, masks
