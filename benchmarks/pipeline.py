"""Data pipeline: images/s the loader delivers against images/s the training step consumes, and the
fraction of training time spent waiting for data in a real `fit` epoch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.bench_settings import Sizes
from benchmarks.throughput import device_loader_images_per_s, loader_images_per_s, step_images_per_s
from seg.loaders import resolve_dataset
from seg.runtime import resolve_device
from seg.train import fit

GOAL = 0.05


def measure(sizes: Sizes, keep: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    cfg = sizes.study_config(1)
    device = resolve_device(cfg.train.device)
    cpu_loader = loader_images_per_s(cfg, sizes.pipeline_batches)
    device_loader = device_loader_images_per_s(cfg, sizes.pipeline_batches)
    step = step_images_per_s(cfg, sizes.step_steps)
    epoch = fit(cfg, resolve_dataset(cfg.data))
    record = epoch.history[0]
    wait = record.data_seconds / max(record.train_seconds, 1e-9)
    result = {
        "device": str(device), "config": cfg.flatten(),
        "cpu_loader_images_per_s": round(cpu_loader, 1),
        # On a CPU device this is the same batch ops running on the CPU: labelled, not a GPU figure.
        "device_loader_images_per_s": round(device_loader, 1),
        "device_loader_runs_on": device.type,
        "train_step_images_per_s": round(step, 1),
        "cpu_loader_over_step_ratio": round(cpu_loader / step, 3),
        "device_loader_over_step_ratio": round(device_loader / step, 3),
        "fit_epoch_data_placement": "device" if epoch.data_on_device else "cpu loader",
        "fit_epoch_placement_reason": epoch.data_placement,
        "fit_epoch_images_per_s": round(record.images_per_s, 1),
        "fit_epoch_data_wait_fraction": round(wait, 4),
        "goal": GOAL, "meets_goal": wait < GOAL,
    }
    result["tables"] = {
        "loader vs training step": [
            {"what": "CPU loader (cached, augmented, num_workers=0)", "images/s": result["cpu_loader_images_per_s"],
             "x step": result["cpu_loader_over_step_ratio"]},
            {"what": f"device loader (seg.gpu_data) on {device.type}", "images/s": result["device_loader_images_per_s"],
             "x step": result["device_loader_over_step_ratio"]},
            {"what": "training step (synthetic batch on the device)", "images/s": result["train_step_images_per_s"],
             "x step": 1.0}],
        "one fit epoch": [
            {"data": result["fit_epoch_data_placement"], "train images/s": result["fit_epoch_images_per_s"],
             "data wait fraction": result["fit_epoch_data_wait_fraction"], "goal": f"< {GOAL}"}]}
    keep(result)
    return result
