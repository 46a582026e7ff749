"""Throughput figures for the segmentation core: training step and data pipeline, in images/s.

    python -m benchmarks.throughput [--device cpu] [--steps 20] [--json out.json]

Prints, for a few UNet sizes, the training images/s of the step alone (synthetic batches already
on the device) and the images/s the cached, augmented loader delivers, so the two can be
compared. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from seg.config import Config
from seg.gpu_data import device_loaders
from seg.loaders import build_loaders, resolve_dataset
from seg.model import build_unet, count_parameters, forward_flops
from seg.optim import build_optimizer
from seg.runtime import Precision, precision_for, resolve_device
from seg.train import train_step

SIZES = {
    "small (depth 3, 8->32)": {"depth": 3, "base_channels": 8, "max_channels": 32},
    "moderate (depth 4, 16->128)": {"depth": 4, "base_channels": 16, "max_channels": 128},
    "large (depth 5, 32->256)": {"depth": 5, "base_channels": 32, "max_channels": 256},
}


def step_images_per_s(cfg: Config, steps: int) -> float:
    """Train steps on a fixed random batch: the compute side, with no loader in the way."""
    device = resolve_device(cfg.train.device)
    return timed_steps(cfg, precision_for(cfg, device), steps, compile_model=cfg.train.compile)


def timed_steps(cfg: Config, prec: Precision, steps: int, *, compile_model: bool = False, warmup: int = 3) -> float:
    """Images/s of `steps` optimisation steps after `warmup` untimed ones (compilation happens there)."""
    device = prec.device
    model = build_unet(cfg.model).to(device, memory_format=prec.memory_format).train()
    step_model = torch.compile(model, dynamic=False) if compile_model else model
    opt = build_optimizer(model.parameters(), cfg.train)
    scaler = torch.amp.GradScaler(device.type, enabled=prec.use_scaler)
    b, s = cfg.train.batch_size, cfg.transforms.crop_size
    x = torch.randn(b, 3, s, s, device=device).contiguous(memory_format=prec.memory_format)  # (B, 3, S, S)
    y = torch.randint(0, cfg.model.num_classes, (b, s, s), device=device)
    for i in range(steps + warmup):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        train_step(step_model, x, y, opt, scaler, prec)
    _sync(device)
    return steps * b / (time.perf_counter() - start)


def loader_images_per_s(cfg: Config, batches: int) -> float:
    """Images/s the train loader delivers from the decoded in-memory cache, augmentations on."""
    data = resolve_dataset(cfg.data)
    loader, _ = build_loaders(cfg, data)
    n, start = 0, time.perf_counter()
    for i, (images, _) in enumerate(loader):
        n += images.shape[0]
        if i + 1 >= batches:
            break
    return n / (time.perf_counter() - start)


def device_loader_images_per_s(cfg: Config, batches: int) -> float:
    """Images/s of the device-resident loader (seg.gpu_data): batches gathered and augmented on the device."""
    device = resolve_device(cfg.train.device)
    loader, _ = device_loaders(cfg, resolve_dataset(cfg.data), device)
    n, seen = 0, 0
    for _ in loader:  # warm-up: the first batch pays one-off kernel set-up
        break
    _sync(device)
    start = time.perf_counter()
    while seen < batches:
        for images, _ in loader:
            n += images.shape[0]
            seen += 1
            if seen >= batches:
                break
    _sync(device)
    return n / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(device: str, steps: int, batch: int, crop: int) -> dict:
    base = Config().replace(train={"device": device, "batch_size": batch},
                            transforms={"crop_size": crop, "scale_min": 0.8, "scale_max": 1.2, "rotation": 15.0,
                                        "color_jitter": 0.2})
    results = {"device": str(resolve_device(device)), "batch": batch, "crop": crop, "threads": torch.get_num_threads(),
               "loader_images_per_s": round(loader_images_per_s(base, batches=max(steps, 10)), 1), "models": {}}
    for name, model in SIZES.items():
        cfg = base.replace(model=model)
        ips = step_images_per_s(cfg, steps)
        flops = 3 * forward_flops(cfg.model, crop, crop)  # forward + backward ~ 3x forward
        results["models"][name] = {"params": count_parameters(build_unet(cfg.model)),
                                   "train_images_per_s": round(ips, 1), "gflop_per_image": round(flops / 1e9, 3),
                                   "achieved_gflops": round(ips * flops / 1e9, 1)}
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    res = run(args.device, args.steps, args.batch, args.crop)
    print(f"device {res['device']}, {res['threads']} threads, batch {res['batch']}, crop {res['crop']}px")
    print(f"{'model':32s} {'params':>10s} {'train img/s':>12s} {'GFLOP/img':>10s} {'GFLOP/s':>8s}")
    for name, r in res["models"].items():
        print(f"{name:32s} {r['params']:>10,d} {r['train_images_per_s']:>12.1f} {r['gflop_per_image']:>10.3f} "
              f"{r['achieved_gflops']:>8.1f}")
    print(f"{'loader (cached, augmented)':32s} {'':>10s} {res['loader_images_per_s']:>12.1f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
