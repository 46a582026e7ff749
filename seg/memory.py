"""Device memory of a training configuration: estimate it before training, measure it, free it after.

- `estimate_training_memory(cfg, h, w)`: weights, gradients, optimizer state and the activations
  autograd keeps, counted from the model's own layers on the meta device (no memory, no compute).
- `estimate_validation_memory(cfg, h, w)`: validating one HxW image after training steps (the model's
  state stays allocated; the forward is sized by `seg.sliding`: whole, or tiles).
- `probe_training_memory(cfg, h, w, device)`: one real training step on a CUDA device, its peak.
- `memory_limit(device, limit_gb)`: what a trial may use (the device's free memory, or a given cap).
- `check_training_memory(cfg, data, device, limit)`: all of the above as one verdict before a trial.
- `release_device_memory(device)`: after a trial (above all after an out-of-memory error) hand the
  cached blocks back, so the next trial starts from the baseline.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import torch
from torch import nn

from seg.config import Config
from seg.data import SegmentationData
from seg.gpu_data import clear_device_data
from seg.model import UNet, build_unet
from seg.optim import build_optimizer
from seg.runtime import MODEL_CACHE, precision_for
from seg.sliding import model_input_size, tiling_for, window_starts
from seg.train import train_step

GiB = 1024 ** 3
# Optimizer state per parameter, in copies of the weights.
OPTIMIZER_STATE = {"adam": 2, "adamw": 2, "sgd": 1, "rmsprop": 1}
# Allocator fragmentation and cuDNN workspaces on top of what the tensors need.
OVERHEAD = 1.2


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return int((self.weights + self.gradients + self.optimizer + self.activations) * OVERHEAD)


def estimate_training_memory(cfg: Config, height: int, width: int, amp: bool) -> MemoryEstimate:
    """Peak bytes of one training step at batch `cfg.train.batch_size` and input (height, width);
    `amp`: convs run in 16-bit (as `precision_for` has them on CUDA and on CPUs with native bf16)."""
    with torch.device("meta"):  # shapes only
        model = UNet(cfg.model)
    n_params = sum(p.numel() for p in model.parameters())
    saved = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal saved
        # Autograd keeps about one activation per layer; convs run in half precision under AMP.
        half = amp and isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
        saved += output.numel() * (2 if half else 4)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    model.eval()
    model(torch.empty(1, cfg.model.in_channels, height, width, device="meta"))  # (1, C, H, W)
    for h in handles:
        h.remove()
    return MemoryEstimate(weights=4 * n_params, gradients=4 * n_params, optimizer=4 * n_params * _state_copies(cfg),
                          activations=saved * cfg.train.batch_size)


def _state_copies(cfg: Config) -> int:
    momentum = cfg.train.optimizer in ("sgd", "rmsprop") and cfg.train.momentum > 0
    return OPTIMIZER_STATE[cfg.train.optimizer] if cfg.train.optimizer in ("adam", "adamw") else int(momentum)


def inference_activation_bytes(cfg: Config, height: int, width: int, amp: bool) -> int:
    """Peak activation bytes of one forward without gradients at batch 1: the skip tensors the UNet keeps
    until its decoder uses them, plus four of its largest layer outputs (a layer's input and output, the
    concatenation and a temporary), counted on the meta device."""
    with torch.device("meta"):
        model = UNet(cfg.model)
    skips, largest = 0, 0

    def skip_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal skips
        skips += output.numel()

    def leaf_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal largest
        largest = max(largest, output.numel())

    handles = [m.register_forward_hook(skip_hook) for m in model.encoders]
    handles += [m.register_forward_hook(leaf_hook) for m in model.modules() if not list(m.children())]
    model.eval()
    model(torch.empty(1, cfg.model.in_channels, height, width, device="meta"))  # (1, C, H, W)
    for h in handles:
        h.remove()
    return (skips + 4 * largest) * (2 if amp else 4)


def estimate_validation_memory(cfg: Config, height: int, width: int, amp: bool) -> int:
    """Peak bytes of validating one decoded (height, width) image between training epochs: the weights,
    gradients and optimizer state stay allocated; one forward as `seg.sliding` sizes it (a group of whole
    images, or a group of tiles); and per pixel of what is run at once the float image, the logits (summed,
    blended and log-softmaxed for the loss), the blend weights and the argmax."""
    tiling = tiling_for(cfg)
    h, w = model_input_size(height, width, cfg)
    if tiling.needs_tiles(h, w):
        th, tw = min(tiling.tile, h), min(tiling.tile, w)
        n_tiles = len(window_starts(h, th, tiling.overlap)) * len(window_starts(w, tw, tiling.overlap))
        forward = min(tiling.tiles_per_forward, n_tiles) * inference_activation_bytes(cfg, th, tw, amp)
        buffer_pixels = h * w  # one image at a time
    else:
        group = tiling.batch_slices(cfg.train.eval_batch_size, h, w)[0]
        images = group.stop - group.start
        forward = images * inference_activation_bytes(cfg, h, w, amp)
        buffer_pixels = images * h * w
    with torch.device("meta"):
        n_params = sum(p.numel() for p in UNet(cfg.model).parameters())
    state = 4 * n_params * (2 + _state_copies(cfg))  # weights, gradients, optimizer state
    per_pixel = 3 * 4 + 3 * cfg.model.num_classes * 4 + 4 + 8
    return int((state + forward + buffer_pixels * per_pixel) * OVERHEAD)


def probe_training_memory(cfg: Config, height: int, width: int, device: torch.device) -> int:
    """Peak bytes of one real training step on a CUDA device (raises torch.OutOfMemoryError)."""
    if device.type != "cuda":
        raise ValueError(f"probing memory needs a CUDA device, got {device}")
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    prec = precision_for(cfg, device)
    try:
        model = build_unet(cfg.model).to(device, memory_format=prec.memory_format).train()
        opt = build_optimizer(model.parameters(), cfg.train)
        scaler = torch.amp.GradScaler(device.type, enabled=prec.use_scaler)
        b = cfg.train.batch_size
        x = torch.randn(b, cfg.model.in_channels, height, width, device=device)  # (B, C, H, W)
        y = torch.randint(0, cfg.model.num_classes, (b, height, width), device=device)  # (B, H, W)
        train_step(model, x.contiguous(memory_format=prec.memory_format), y, opt, scaler, prec)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    finally:
        model = opt = x = y = None  # drop the references before freeing
        release_device_memory(device)


def memory_limit(device: torch.device, limit_gb: float | None = None) -> int | None:
    """Bytes a trial may use: the given cap, else on CUDA the free memory plus this process's cache."""
    if limit_gb is not None:
        if limit_gb <= 0:
            raise ValueError(f"memory limit {limit_gb} GB: expected a positive number")
        return int(limit_gb * GiB)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return None


def release_device_memory(device: torch.device, drop_caches: bool = False) -> int | None:
    """Collect garbage and empty the CUDA cache; returns `memory_allocated` afterwards (None off CUDA).

    `drop_caches` also drops what trials share on purpose (the compiled model, the dataset stacked on
    the device): after an out-of-memory error the next trial starts from the process's baseline."""
    if drop_caches:
        MODEL_CACHE.clear()
        clear_device_data()
    gc.collect()
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated(device)


@dataclass(frozen=True)
class MemoryVerdict:
    """Whether a training step fits: the estimate, the probe's measured peak (CUDA), and why not."""

    estimate: int
    probe_peak: int | None = None
    refused: str | None = None  # the reason, when it does not fit


def check_training_memory(cfg: Config, data: SegmentationData, device: torch.device, limit: int) -> MemoryVerdict:
    """Estimate (and on CUDA probe) one training step, and estimate validation of the largest val image,
    against `limit` bytes, before any training."""
    h, w = training_input_size(cfg, data)
    amp = precision_for(cfg, device).amp_dtype is not None
    estimate = estimate_training_memory(cfg, h, w, amp).total
    where = f"batch {cfg.train.batch_size} at {h}x{w} on {device}"
    if estimate > limit:
        return MemoryVerdict(estimate, refused=f"estimated peak {estimate / GiB:.2f} GiB for {where} exceeds the "
                                               f"{limit / GiB:.2f} GiB available (rejected before training)")
    if len(data.val):
        vh, vw = max(((img.shape[-2], img.shape[-1]) for img in data.val.images), key=lambda s: s[0] * s[1])
        val_estimate = estimate_validation_memory(cfg, vh, vw, amp)
        if val_estimate > limit:
            return MemoryVerdict(val_estimate, refused=(
                f"estimated peak {val_estimate / GiB:.2f} GiB for validating the largest val image ({vh}x{vw}) on "
                f"{device} exceeds the {limit / GiB:.2f} GiB available (rejected before training; "
                "train.eval_max_pixels sets the size validated in one piece)"))
        estimate = max(estimate, val_estimate)
    if device.type != "cuda":
        return MemoryVerdict(estimate)
    peak, oom = None, False
    try:
        peak = probe_training_memory(cfg, h, w, device)
    except torch.OutOfMemoryError:
        oom = True  # leave the except block first: its traceback holds the probe's tensors
    if oom or peak > limit:
        release_device_memory(device, drop_caches=True)
        return MemoryVerdict(estimate, peak, f"a probe training step for {where} ran out of memory "
                                             "(rejected before training)")
    return MemoryVerdict(estimate, peak)


def training_input_size(cfg: Config, data: SegmentationData) -> tuple[int, int]:
    """(H, W) of a training batch: the crop, the resize, or the largest training image (pad-collate)."""
    t = cfg.transforms
    if t.crop_mode != "none":
        return t.crop_size, t.crop_size
    if t.resize:
        return tuple(t.resize)
    return (max(img.shape[-2] for img in data.train.images), max(img.shape[-1] for img in data.train.images))
