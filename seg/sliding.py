"""Inference at any image size, sized for the device: the whole image when it fits, else a sliding window.

One code path for validation in `seg.train.fit`, for `seg.predict.Predictor` and for `search.evaluate`.

- **What fits.** An input runs whole when it has at most `eval_max_pixels(cfg)` pixels:
  `train.eval_max_pixels` when it is set (> 0), else automatically the larger of
  `train.batch_size x tile x tile` (the pixels of one training step, which keeps every activation for
  the backward pass; a forward without gradients over as many pixels needs several times less, so it
  fits wherever training fits) and `MIN_EVAL_PIXELS`, one megapixel (1024 x 1024: about 1.5 GB of
  float32 activations for a base-64, depth-5 UNet, half that under AMP; the whole image gives the
  network more context than tiles, and tiles with half a tile of overlap run about 4x the pixels).
  Photos of 12 megapixels run in tiles. A validation batch whose images together exceed the limit
  runs in smaller groups of images, one image at a time at the least. The memory check before a trial
  (`seg.memory.check_training_memory`) estimates validation of the largest val image as well.
- **Tiles.** A larger image runs as nnU-Net runs it: square tiles of the training crop
  (`transforms.crop_size`, rounded down to a multiple of the UNet's size divisor, also with
  crop_mode='none', where it sets only the tile; a side shorter than the tile is run whole), placed
  with a step of half a tile (`OVERLAP` = 0.5) so that the first and last tiles touch the borders,
  and their logits blended with a Gaussian importance map (sigma = tile / 8, 1 at the centre): the
  tile borders, where the network sees the least context, count least. Several tiles go through the
  model at once, up to the pixel limit.
- `validation_pixels(h, w, cfg)`: the pixels the model actually runs to validate one decoded HxW image
  (after the resize policy, padded to the divisor, tiles counted with their overlap), for time and
  memory models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from seg.config import Config

OVERLAP = 0.5  # nnU-Net's default tile step of 0.5
SIGMA_SCALE = 1 / 8  # nnU-Net's Gaussian: sigma = tile side / 8
MIN_EVAL_PIXELS = 1024 * 1024  # the automatic limit is never below this

Forward = Callable[[torch.Tensor], torch.Tensor]  # (B, C, h, w) -> logits (B, K, h, w)


def tile_side(cfg: Config) -> int:
    """The training crop, rounded down to a multiple of the size divisor (so no tile is padded inside)."""
    d = cfg.model.size_divisor
    return max(d, cfg.transforms.crop_size // d * d)


def eval_max_pixels(cfg: Config) -> int:
    """Pixels one forward may take at validation and prediction (see the module docstring)."""
    if cfg.train.eval_max_pixels > 0:
        return cfg.train.eval_max_pixels
    return max(cfg.train.batch_size * tile_side(cfg) ** 2, MIN_EVAL_PIXELS)


def model_input_size(h: int, w: int, cfg: Config) -> tuple[int, int]:
    """(H, W) the model sees for a decoded HxW image: the resize policy's size, else the image's own."""
    return tuple(cfg.transforms.resize) if cfg.transforms.resize is not None else (h, w)


@dataclass(frozen=True)
class Tiling:
    """How inputs are run: whole up to `max_pixels` pixels, else in `tile` x `tile` windows with `overlap`."""

    max_pixels: int
    tile: int
    overlap: float = OVERLAP

    def needs_tiles(self, h: int, w: int) -> bool:
        return h * w > self.max_pixels

    @property
    def tiles_per_forward(self) -> int:
        return max(1, self.max_pixels // self.tile ** 2)

    def batch_slices(self, n: int, h: int, w: int) -> list[slice]:
        """Groups of a (n, C, h, w) batch that each stay within the limit (one image at the least)."""
        per = n if n * h * w <= self.max_pixels else max(1, self.max_pixels // max(h * w, 1))
        return [slice(i, min(i + per, n)) for i in range(0, n, per)]

    def logits(self, forward: Forward, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> float logits (B, K, H, W): one forward when the batch fits, else per group of
        images, each whole or in tiles."""
        n, _, h, w = x.shape
        parts = []
        for part in self.batch_slices(n, h, w):
            if self.needs_tiles(h, w):
                parts.append(sliding_window_logits(forward, x[part], self.tile, self.overlap,
                                                   tiles_per_forward=self.tiles_per_forward))
            else:
                parts.append(forward(x[part]).float())
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def tiling_for(cfg: Config) -> Tiling:
    return Tiling(eval_max_pixels(cfg), tile_side(cfg))


def needs_tiles(h: int, w: int, cfg: Config) -> bool:
    """Whether validating a decoded HxW image runs a sliding window (after the resize policy)."""
    return tiling_for(cfg).needs_tiles(*model_input_size(h, w, cfg))


def any_needs_tiles(sizes: Iterable[tuple[int, int]], cfg: Config) -> bool:
    return any(needs_tiles(h, w, cfg) for h, w in sizes)


def window_starts(size: int, tile: int, overlap: float = OVERLAP) -> list[int]:
    """Offsets of the windows along one side: evenly spread, first at 0, last at size - tile (nnU-Net's rule)."""
    if size <= tile:
        return [0]
    step = max(1.0, tile * (1.0 - overlap))
    n = math.ceil((size - tile) / step) + 1
    spacing = (size - tile) / (n - 1)
    return [round(i * spacing) for i in range(n)]


def gaussian_weights(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(h, w) importance map: 1 at the centre, sigma = side / 8, strictly positive everywhere."""
    def axis(n: int) -> torch.Tensor:
        t = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2
        return torch.exp(-(t ** 2) / (2 * (n * SIGMA_SCALE) ** 2))

    g = axis(h)[:, None] * axis(w)[None, :]
    return (g / g.max()).clamp(min=1e-6)  # no pixel gets zero weight: every covered pixel has a value


def sliding_window_logits(forward: Forward, x: torch.Tensor, tile: int, overlap: float = OVERLAP, *,
                          tiles_per_forward: int = 1) -> torch.Tensor:
    """Float logits (B, K, H, W) of x (B, C, H, W) from overlapping tile x tile windows, Gaussian-blended.

    A side shorter than `tile` is taken whole. `tiles_per_forward` windows go through `forward` at once.
    The blend is a weighted mean, so a model whose output at a pixel depends on that pixel alone gives
    exactly its whole-image logits."""
    b, _, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    boxes = [(top, left) for top in window_starts(h, th, overlap) for left in window_starts(w, tw, overlap)]
    weight = gaussian_weights(th, tw, x.device)  # (th, tw)
    out: torch.Tensor | None = None
    norm = torch.zeros((h, w), dtype=torch.float32, device=x.device)  # (H, W) summed weights
    for i in range(0, len(boxes), tiles_per_forward):
        group = boxes[i: i + tiles_per_forward]
        patches = torch.cat([x[..., t: t + th, left: left + tw] for t, left in group])  # (len(group) * B, C, th, tw)
        logits = forward(patches).float()  # (len(group) * B, K, th, tw)
        if out is None:
            out = torch.zeros((b, logits.shape[1], h, w), dtype=torch.float32, device=x.device)  # (B, K, H, W)
        for j, (t, left) in enumerate(group):
            out[..., t: t + th, left: left + tw] += logits[j * b: (j + 1) * b] * weight
            norm[t: t + th, left: left + tw] += weight
    return out / norm


def validation_pixels(h: int, w: int, cfg: Config) -> int:
    """Pixels run through the model to validate one decoded HxW image: the whole image padded to the
    size divisor, or every tile (padded likewise) with its overlap."""
    h, w = model_input_size(h, w, cfg)
    d = cfg.model.size_divisor

    def padded(n: int) -> int:
        return -(-n // d) * d

    tiling = tiling_for(cfg)
    if not tiling.needs_tiles(h, w):
        return padded(h) * padded(w)
    th, tw = min(tiling.tile, h), min(tiling.tile, w)
    n = len(window_starts(h, th, tiling.overlap)) * len(window_starts(w, tw, tiling.overlap))
    return n * padded(th) * padded(tw)
