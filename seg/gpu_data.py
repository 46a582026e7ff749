"""Decoded data kept on the training device, batched and augmented there: the fast path on CUDA and CPU.

On a GPU the CPU loader (per-sample torchvision v2 ops in Python, ~650 images/s on 2 cores) is
far below what the step consumes (thousands of images/s), so when the decoded dataset fits in a
small share of free GPU memory, `fit` stacks it on the GPU once and `DeviceLoader` does shuffling,
random crop, scale/rotation, flips and colour jitter as whole-batch tensor ops on the device
(`seg.batch_augment`):

- the same random draws per sample as the CPU pipeline (crop offset, angle and scale, flips,
  brightness/contrast/saturation factors), drawn from a device generator, so no host sync;
- image and mask go through the same index gather and the same sampling grid (the mask rides as
  a 4th channel), so they stay aligned by construction; interpolation is nearest for both (v2's
  RandomAffine default), and whatever lies outside the source is 0 in images and 255 in masks;
- colour jitter applies brightness, contrast, saturation in that fixed order (v2 shuffles the
  order per sample);
- with `crop_mode='none'` the batch is padded first and then warped/flipped as a whole, so padding
  can move to the left/top and the rotation centre is the batch's, not each image's (padding is
  ignored by loss and metric either way). With the default random crop there is no difference.

The same ops run on CPU tensors, and `fit` uses them on a CPU device too when the stacked data
takes under a quarter of the available host memory: on CPU the per-sample loader competes with the
step for the same cores, and the batched path delivers ~5x more images/s. `SEG_DEVICE_DATA=off` (or
`fit(..., data_on_device=False)`) keeps the per-sample DataLoader pipeline; `on` forces this one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from seg.batch_augment import BatchAugment
from seg.config import Config, TransformConfig
from seg.data import IGNORE_INDEX, SegmentationData, Split
from seg.loaders import drops_last
from seg.transforms import build_eval_transform

# Share of free GPU memory the stacked dataset may take; the rest is for the model and activations.
MAX_FREE_MEMORY_SHARE = 0.25
DEVICE_DATA_ENV = "SEG_DEVICE_DATA"
MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class DeviceSplit:
    """A split stacked on one device, padded to its largest image (images with 0, masks with 255)."""

    images: torch.Tensor  # uint8 (N, 3, Hmax, Wmax)
    masks: torch.Tensor  # uint8 (N, Hmax, Wmax)
    sizes: torch.Tensor  # int64 (N, 2): each sample's own (h, w), on the device
    host_sizes: tuple[tuple[int, int], ...]  # the same on the host, for batch shapes without a sync

    def __len__(self) -> int:
        return self.images.shape[0]


def _resized_pairs(split: Split, cfg: TransformConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Apply the deterministic resize policy once (the eval transform is exactly that policy)."""
    from torchvision import tv_tensors

    resize = build_eval_transform(cfg)
    pairs = []
    for image, mask in zip(split.images, split.masks):
        img, msk = resize(tv_tensors.Image(image), tv_tensors.Mask(mask))
        pairs.append((img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor)))
    return pairs


def stacked_shape(split: Split, cfg: TransformConfig, min_side: int = 0) -> tuple[int, int, int]:
    """(N, Hmax, Wmax) the stacked split will have, from the host sizes alone."""
    if cfg.resize is not None:
        h, w = cfg.resize
    else:
        h = max((img.shape[-2] for img in split.images), default=0)
        w = max((img.shape[-1] for img in split.images), default=0)
    return len(split), max(h, min_side), max(w, min_side)


def stack_split(split: Split, cfg: TransformConfig, device: torch.device, min_side: int = 0) -> DeviceSplit:
    """Pad-stack a decoded split (after the resize policy) and move it to `device` in one copy each."""
    pairs = _resized_pairs(split, cfg)
    n = len(pairs)
    h = max([img.shape[-2] for img, _ in pairs] + [min_side])
    w = max([img.shape[-1] for img, _ in pairs] + [min_side])
    images = torch.zeros((n, 3, h, w), dtype=torch.uint8)  # (N, 3, H, W)
    masks = torch.full((n, h, w), IGNORE_INDEX, dtype=torch.uint8)  # (N, H, W)
    for i, (img, msk) in enumerate(pairs):
        images[i, :, : img.shape[-2], : img.shape[-1]] = img
        masks[i, : msk.shape[-2], : msk.shape[-1]] = msk
    host_sizes = tuple((int(img.shape[-2]), int(img.shape[-1])) for img, _ in pairs)
    sizes = torch.tensor(host_sizes, dtype=torch.int64).reshape(n, 2)
    return DeviceSplit(images.to(device), masks.to(device), sizes.to(device), host_sizes)


def stacked_nbytes(data: SegmentationData, cfg: TransformConfig) -> int:
    """Bytes the train and val splits take once stacked: 3 image bytes + 1 mask byte per pixel."""
    total = 0
    for split in (data.train, data.val):
        n, h, w = stacked_shape(split, cfg, cfg.crop_size if cfg.crop_mode == "random" else 0)
        total += n * 4 * h * w
    return total


def requested_mode(explicit: bool | None) -> str:
    """'on' / 'off' from the argument, else the SEG_DEVICE_DATA environment variable, else 'auto'."""
    if explicit is not None:
        return "on" if explicit else "off"
    mode = os.environ.get(DEVICE_DATA_ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{DEVICE_DATA_ENV}={mode!r}; expected one of {list(MODES)}")
    return mode


def device_data_decision(cfg: Config, data: SegmentationData, device: torch.device,
                         explicit: bool | None = None) -> tuple[bool, str]:
    """Whether to keep the data on `device` and augment there, and why (recorded in the fit result)."""
    mode = requested_mode(explicit)
    if mode == "off":
        return False, "device data off (data_on_device=False or SEG_DEVICE_DATA=off)"
    if cfg.transforms.crop_mode == "five":
        return False, "crop_mode='five' runs on the CPU loader"
    if mode == "on":
        return True, "device data forced on"
    if device.type == "cuda":
        free, where = torch.cuda.mem_get_info(device)[0], "GPU"
    elif device.type == "cpu":
        # Whole-batch ops beat per-sample v2 transforms on the CPU too (~5x on 2 cores), and there
        # the loader steals cores from the step: batched, the data wait drops from ~12% to ~3%.
        free, where = host_available_bytes(), "host"
    else:
        return False, f"{device.type} device: the batched data path runs on CUDA and CPU only"
    need = stacked_nbytes(data, cfg.transforms)
    if free is None:
        return False, "available host memory unknown: CPU loader"
    if need > MAX_FREE_MEMORY_SHARE * free:
        return False, (f"dataset needs {need / 2**20:.0f} MiB, over {MAX_FREE_MEMORY_SHARE:.0%} of free "
                       f"{where} memory")
    return True, f"dataset stacked in {where} memory ({need / 2**20:.0f} MiB), augmented in batches"


def host_available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping), else free pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file counts kB
    except OSError:  # no /proc (not Linux): ask sysconf below
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class DeviceLoader:
    """Batches of (uint8 images, uint8 masks) already on the device; drop-in for the DataLoaders in `fit`.

    Train: a fresh host permutation per epoch (seeded, like the DataLoader's), copied to the device
    once per epoch, and `BatchAugment` on each batch. Eval: in order, no augmentation, each batch cut
    to its largest image (the shape `pad_collate` gives).
    """

    def __init__(self, split: DeviceSplit, batch_size: int, *, seed: int, augment: TransformConfig | None = None,
                 shuffle: bool = False, drop_last: bool = False) -> None:
        self.split, self.batch_size, self.shuffle, self.drop_last = split, batch_size, shuffle, drop_last
        self.host_gen = torch.Generator().manual_seed(seed)
        dev_gen = torch.Generator(device=split.images.device).manual_seed(seed)
        self.augment = BatchAugment(augment, dev_gen) if augment is not None else None

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self) -> torch.Tensor:
        n = len(self.split)
        return torch.randperm(n, generator=self.host_gen) if self.shuffle else torch.arange(n)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        dev = self.split.images.device
        # One pinned, non-blocking copy per epoch; slicing it per batch costs no transfer and no sync.
        on_dev = order.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else order.to(dev)
        for i in range(len(self)):
            lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, len(order))
            yield self.batch(on_dev[lo:hi], order[lo:hi].tolist())

    def batch(self, idx: torch.Tensor, host_idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch: the samples at `idx` (device indices; `host_idx`, the same on the host), cut to
        shape and augmented.

        Iterating the loader calls this once per batch, so it is the place to hook per-batch
        behaviour when debugging a training loop: wrap or patch `DeviceLoader.batch` to inspect,
        slow down or fail batches (the fault tests make a trial hang here).
        """
        s = self.split
        images, masks = s.images.index_select(0, idx), s.masks.index_select(0, idx)
        if self.augment is not None and self.augment.cfg.crop_mode == "random":
            return self.augment(images, masks, s.sizes.index_select(0, idx))
        h = max(s.host_sizes[j][0] for j in host_idx)
        w = max(s.host_sizes[j][1] for j in host_idx)
        images, masks = images[:, :, :h, :w], masks[:, :h, :w]
        if self.augment is not None:
            return self.augment(images, masks, s.sizes.index_select(0, idx))
        return images, masks


_STORE: dict[str, tuple[Split, TransformConfig, DeviceSplit]] = {}


def clear_device_data() -> None:
    """Drop the stacked datasets (after an out-of-memory error, so the next trial starts from the baseline)."""
    _STORE.clear()


def cached_stack(split: Split, cfg: TransformConfig, device: torch.device, min_side: int, role: str) -> DeviceSplit:
    """Stack once per (split, resize policy, device) and reuse it across the trials of one process.

    One entry per role ('train', 'val'), so a new dataset or device replaces the old one instead of
    piling up in GPU memory.
    """
    hit = _STORE.get(role)
    if hit is not None:
        old_split, old_cfg, stacked = hit
        if (old_split is split and old_cfg.resize == cfg.resize and stacked.images.device == device
                and stacked.images.shape[-2] >= min_side and stacked.images.shape[-1] >= min_side):
            return stacked
    _STORE.pop(role, None)  # free the old stack before building the new one
    stacked = stack_split(split, cfg, device, min_side)
    _STORE[role] = (split, cfg, stacked)
    return stacked


def device_loaders(cfg: Config, data: SegmentationData, device: torch.device,
                   val_on_device: bool = True) -> tuple[DeviceLoader, DeviceLoader | None]:
    """(train, val) device loaders with the same batch sizes and drop-last rule as `build_loaders`.
    `val_on_device=False` (val images validated in tiles, seg.sliding): val is None, the caller keeps it on the host."""
    t, tf = cfg.train, cfg.transforms
    min_side = tf.crop_size if tf.crop_mode == "random" else 0
    train_split = cached_stack(data.train, tf, device, min_side, "train")
    train = DeviceLoader(train_split, t.batch_size, seed=t.seed, augment=tf, shuffle=True,
                         drop_last=drops_last(len(train_split), t.batch_size))
    if not val_on_device:
        _STORE.pop("val", None)
        return train, None
    val = DeviceLoader(cached_stack(data.val, tf, device, 0, "val"), t.eval_batch_size, seed=t.seed)
    return train, val
