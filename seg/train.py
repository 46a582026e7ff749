"""Train one UNet configuration: `fit(cfg, data, on_epoch_end)` and the `python -m seg.train` CLI.

    python -m seg.train --config studies/seed-baseline.toml --data /path/to/data --out outputs/run1

`fit` knows nothing of Optuna or MLflow. It returns plain per-epoch records and calls
`on_epoch_end(record)` after every epoch; the callback returns True to stop, or raises to abort
(that is how the search harness reports, prunes and logs).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seg.checkpoint import save_checkpoint
from seg.config import Config, load_config
from seg.data import IGNORE_INDEX, DatasetSpec, SegmentationData
from seg.gpu_data import device_data_decision, device_loaders
from seg.loaders import build_loaders, class_names, resolve_dataset
from seg.losses import LossFn, build_loss, masked_cross_entropy
from seg.metrics import ConfusionMatrix, SegScores
from seg.optim import Schedule, build_optimizer
from seg.runtime import (
    MODEL_CACHE,
    Precision,
    precision_for,
    resolve_device,
    seed_everything,
)
from seg.sliding import Tiling, any_needs_tiles, tiling_for
from seg.transforms import Normalize

# Host syncs for the non-finite check: every step on CPU (free), every N steps on CUDA.
CUDA_FINITE_CHECK_EVERY = 25


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; training stops at once."""


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    val_loss: float
    val_miou: float
    val_pixel_accuracy: float
    iou: tuple[float | None, ...]
    lr: float
    seconds: float
    train_seconds: float
    data_seconds: float
    images_per_s: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    history: list[EpochResult] = field(default_factory=list)
    best_miou: float = -math.inf
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    best_confusion: tuple[tuple[int, ...], ...] = ()
    stop_reason: str = "completed"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    data_on_device: bool = False  # True: data stacked on the device and augmented there (seg.gpu_data)
    data_placement: str = ""  # why the data is where it is
    compiled_model_reused: bool = False  # True: a cached compiled model was reused (no compilation)
    spec: DatasetSpec | None = None  # the data's resolved label conventions, stored in the checkpoint


EpochCallback = Callable[[EpochResult], bool | None]
Loaders = tuple[Iterable[tuple[torch.Tensor, torch.Tensor]], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def fit(cfg: Config, data: SegmentationData | None = None, on_epoch_end: EpochCallback | None = None, *,
        data_on_device: bool | None = None) -> FitResult:
    """Train and validate once per epoch; keep the best weights by val mIoU.

    `data_on_device`: None = automatic (on CUDA and CPU when the stacked data fits, see `seg.gpu_data`;
    the SEG_DEVICE_DATA environment variable can force on/off), True/False = force.
    """
    seed_everything(cfg.train.seed)
    data = data if data is not None else resolve_dataset(cfg.data)
    device = resolve_device(cfg.train.device)
    prec = precision_for(cfg, device)
    with MODEL_CACHE.lease(cfg.model, prec, cfg.train.compile) as (model, step_model, reused):
        on_device, placement = device_data_decision(cfg, data, device, data_on_device)
        result = FitResult(data_on_device=on_device, data_placement=placement, compiled_model_reused=reused,
                           spec=data.spec)
        return _fit_loop(cfg, data, model, step_model, prec, _loaders(cfg, data, device, on_device), result,
                         on_epoch_end)


def _loaders(cfg: Config, data: SegmentationData, device: torch.device, on_device: bool) -> Loaders:
    """(train, val) loaders. Val images that need tiles (seg.sliding) stay on the host, batch by batch,
    even when the training data is stacked on the device: stacked whole they could fill it."""
    pin = device.type == "cuda"
    if not on_device:
        return build_loaders(cfg, data, pin_memory=pin)
    tiled_val = any_needs_tiles(((img.shape[-2], img.shape[-1]) for img in data.val.images), cfg)
    train, val = device_loaders(cfg, data, device, val_on_device=not tiled_val)
    if val is None:
        val = build_loaders(cfg, data, pin_memory=pin)[1]
    return train, val


def _fit_loop(cfg: Config, data: SegmentationData, model: nn.Module, step_model: nn.Module, prec: Precision,
              loaders: Loaders, result: FitResult, on_epoch_end: EpochCallback | None) -> FitResult:
    mean, std = (data.mean, data.std) if cfg.transforms.normalize else ((0.0,) * 3, (1.0,) * 3)
    result.mean, result.std = tuple(mean), tuple(std)
    norm = Normalize(mean, std).to(prec.device)
    train_loader, val_loader = loaders
    loss_fn = build_loss(cfg.train.loss, cfg.model.num_classes, data.train.masks, prec.device)
    optimizer = build_optimizer(model.parameters(), cfg.train)
    schedule = Schedule(optimizer, cfg.train, len(train_loader))
    scaler = torch.amp.GradScaler(prec.device.type, enabled=prec.use_scaler)
    stale = 0
    for epoch in range(cfg.train.epochs):
        start = time.perf_counter()
        train_loss, data_s, n_images = train_one_epoch(step_model, norm, train_loader, optimizer, schedule, scaler,
                                                       prec, cfg.train.grad_clip, loss_fn)
        train_s = time.perf_counter() - start
        # Eager model for validation: whole images of varying sizes would make a compiled model
        # recompile per shape; it shares the compiled one's weights. The val loss is plain CE whatever
        # train.loss is, so it compares across trials. Large images run in tiles (seg.sliding).
        val_loss, scores = evaluate(model, norm, val_loader, prec, cfg.model.num_classes, tiling_for(cfg))
        schedule.after_epoch(scores.miou)
        record = EpochResult(epoch, train_loss, val_loss, scores.miou, scores.pixel_accuracy, scores.iou,
                             optimizer.param_groups[0]["lr"], time.perf_counter() - start, train_s, data_s,
                             n_images / max(train_s, 1e-9))
        result.history.append(record)
        if record.val_miou > result.best_miou:
            result.best_miou, result.best_epoch, stale = record.val_miou, epoch, 0
            result.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            result.best_confusion = scores.confusion
        else:
            stale += 1
        if on_epoch_end is not None and on_epoch_end(record):
            result.stop_reason = "callback"
            break
        if cfg.train.early_stopping and stale >= cfg.train.early_stopping:
            result.stop_reason = "early_stopping"
            break
    return result


def train_one_epoch(model: nn.Module, norm: Normalize, loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    optimizer: torch.optim.Optimizer, schedule: Schedule, scaler: torch.amp.GradScaler, prec: Precision,
                    grad_clip: float, loss_fn: LossFn = masked_cross_entropy) -> tuple[float, float, int]:
    """One pass over the loader; returns (mean loss, seconds waiting for data, images seen)."""
    model.train()
    loss_sum = torch.zeros((), device=prec.device)
    bad = torch.zeros((), dtype=torch.bool, device=prec.device)
    data_s, n_images, steps = 0.0, 0, 0
    waited = time.perf_counter()
    for images, masks in loader:
        data_s += time.perf_counter() - waited
        x, y = to_device(images, masks, norm, prec)
        loss = train_step(model, x, y, optimizer, scaler, prec, grad_clip, loss_fn)
        schedule.after_step()
        loss_sum += loss
        bad |= ~torch.isfinite(loss)
        steps += 1
        n_images += images.shape[0]
        if prec.device.type != "cuda" or steps % CUDA_FINITE_CHECK_EVERY == 0:
            _raise_if_nonfinite(bad, steps)
        waited = time.perf_counter()
    _raise_if_nonfinite(bad, steps)
    return loss_sum.item() / max(steps, 1), data_s, n_images


def to_device(images: torch.Tensor, masks: torch.Tensor, norm: Normalize,
              prec: Precision) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 batch -> normalised float images (B, 3, H, W) and long masks (B, H, W) on the device."""
    x = norm(images.to(prec.device, non_blocking=True)).contiguous(memory_format=prec.memory_format)
    return x, masks.to(prec.device, non_blocking=True).long()


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, prec: Precision, grad_clip: float = 0.0,
               loss_fn: LossFn = masked_cross_entropy) -> torch.Tensor:
    """One optimisation step; returns the detached loss (no host sync)."""
    with prec.autocast():
        loss = loss_fn(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def _raise_if_nonfinite(bad: torch.Tensor, step: int) -> None:
    if bool(bad):
        raise NonFiniteLossError(f"training loss became non-finite (NaN or inf) by step {step}")


@torch.no_grad()
def evaluate(model: nn.Module, norm: Normalize, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], prec: Precision,
             num_classes: int, tiling: Tiling | None = None) -> tuple[float, SegScores]:
    """Val loss and scores from one confusion matrix over the whole loader.

    `tiling` sizes each forward (seg.sliding): a batch over its pixel limit runs in groups of images,
    and an image over it in Gaussian-blended tiles; None runs every batch whole."""
    model.eval()
    cm = ConfusionMatrix(num_classes, IGNORE_INDEX, device=prec.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=prec.device)
    pixels = torch.zeros((), dtype=torch.int64, device=prec.device)
    for batch_images, batch_masks in loader:
        n, _, h, w = batch_images.shape
        # Normalise group by group: a whole batch of large images in float could not fit either.
        for part in tiling.batch_slices(n, h, w) if tiling is not None else [slice(0, n)]:
            x, y = to_device(batch_images[part], batch_masks[part], norm, prec)
            with prec.autocast():
                logits = tiling.logits(model, x) if tiling is not None else model(x)  # (b, K, H, W)
            loss_sum += F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX, reduction="sum")
            pixels += (y != IGNORE_INDEX).sum()
            cm.update(y, logits.argmax(1))
    return (loss_sum / pixels.clamp(min=1)).item(), cm.compute()


def save_result(path: str | Path, cfg: Config, result: FitResult, names: tuple[str, ...]) -> Path:
    """Checkpoint of the best epoch's weights (plain data)."""
    if result.best_state is None:
        raise ValueError("no epoch finished, so there are no weights to save")
    best = result.history[result.best_epoch]
    return save_checkpoint(path, result.best_state, cfg, result.mean, result.std, names,
                           metrics={"val_miou": best.val_miou, "epoch": best.epoch}, spec=result.spec)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m seg.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="TOML file with [model] [data] [transforms] [train] tables "
                                                "(default: the built-in defaults on the embedded dataset)")
    p.add_argument("--data", help="dataset folder (overrides data.root; default: the embedded procedural dataset)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--device", help="override train.device (auto, cpu, cuda, cuda:1)")
    p.add_argument("--out", type=Path, default=Path("outputs/seg-train"), help="folder for checkpoint and history")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    cfg = load_config(args.config) if args.config else Config()
    overrides = {k: v for k, v in {"epochs": args.epochs, "device": args.device}.items() if v is not None}
    cfg = cfg.replace(train=overrides, data={"root": args.data} if args.data else {})
    data = resolve_dataset(cfg.data)

    def show(r: EpochResult) -> None:
        print(f"epoch {r.epoch:3d}  train_loss {r.train_loss:.4f}  val_loss {r.val_loss:.4f}  "
              f"val_mIoU {r.val_miou:.4f}  lr {r.lr:.2e}  {r.seconds:.1f}s  {r.images_per_s:.1f} img/s", flush=True)

    result = fit(cfg, data, on_epoch_end=show)
    ckpt = save_result(args.out / "best.pt", cfg, result, class_names(cfg.data))
    (args.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    (args.out / "history.json").write_text(json.dumps([r.to_dict() for r in result.history], indent=2))
    print(f"best val mIoU {result.best_miou:.4f} at epoch {result.best_epoch}; checkpoint {ckpt}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
