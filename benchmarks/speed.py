"""Training speed of the report's UNet (256x256, batch 16) per variant, and its fraction of the FLOP floor.

Variants: fp32, bf16 AMP, bf16 + channels_last, bf16 + channels_last + torch.compile. FLOPs per
image come from the model itself (`seg.model.forward_flops`, x3 for forward + backward). On CUDA the
floor is the device's peak from `benchmarks.peaks`; on a CPU it is a matmul measured in this run.
On a CPU only fp32 runs unless `--speed-cpu-variants` (the report's UNet is slow there and compile takes
minutes; `python -m benchmarks.cpu_precision` compares fp32, channels_last and bf16 on a CPU at the
default study's sizes); skipped variants keep their fields, null, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmarks.bench_settings import Sizes
from benchmarks.peaks import (
    H100_MEASURED_BF16_TFLOPS,
    gpu_peak,
    measured_matmul_flops,
)
from benchmarks.throughput import timed_steps
from seg.model import build_unet, count_parameters, forward_flops
from seg.runtime import Precision, resolve_device

# name -> (autocast bf16, channels_last, compile)
VARIANTS: dict[str, tuple[bool, bool, bool]] = {
    "fp32": (False, False, False),
    "bf16 AMP": (True, False, False),
    "bf16 AMP + channels_last": (True, True, False),
    "bf16 AMP + channels_last + compile": (True, True, True),
}
ISSUE_TARGETS = {"bf16 AMP + channels_last": 1000.0, "bf16 AMP + channels_last + compile": 1500.0}


def skip_reason(name: str, device: torch.device, sizes: Sizes) -> str | None:
    bf16, _, compiled = VARIANTS[name]
    if device.type == "cuda":
        if bf16 and not torch.cuda.is_bf16_supported():
            return "this GPU has no bf16"
        return None
    if name == "fp32":
        return None
    if compiled and sizes.tiny:
        return "CPU: torch.compile's C++ build takes minutes; not run in --tiny mode"
    if not sizes.speed_cpu_variants:
        return "CPU: the variants past fp32 take minutes at this size; pass --speed-cpu-variants to run them on CPU"
    return None


def peaks(device: torch.device, tiny: bool, with_bf16: bool) -> dict[str, Any]:
    """FLOP/s floors per precision: vendor table on CUDA, measured matmul on CPU."""
    if device.type == "cuda":
        p = gpu_peak(torch.cuda.get_device_name(device))
        return {"fp32": p["tf32"], "bf16": p["bf16"], "source": p["source"],
                "issue_measured_h100_bf16": H100_MEASURED_BF16_TFLOPS * 1e12}
    n = 256 if tiny else 2048
    return {"fp32": measured_matmul_flops(device, torch.float32, n),
            "bf16": measured_matmul_flops(device, torch.bfloat16, n // 2) if with_bf16 else None,
            "source": f"CPU: fp32 {n}x{n}" + (f" and bf16 {n // 2}x{n // 2}" if with_bf16 else "")
                      + f" matmul measured in this run ({torch.get_num_threads()} threads)",
            "issue_measured_h100_bf16": H100_MEASURED_BF16_TFLOPS * 1e12}


def measure(sizes: Sizes, keep: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    cfg = sizes.speed_config()
    device = resolve_device(cfg.train.device)
    size = sizes.speed_size
    flops = 3 * forward_flops(cfg.model, size, size)
    floor = peaks(device, sizes.tiny, with_bf16=sizes.speed_cpu_variants)
    steps = sizes.speed_steps if device.type == "cuda" else sizes.speed_cpu_steps
    result: dict[str, Any] = {"device": str(device), "model": cfg.to_dict()["model"],
                              "params": count_parameters(build_unet(cfg.model)), "image_size": size,
                              "batch": sizes.speed_batch, "timed_steps": steps,
                              "train_gflop_per_image": round(flops / 1e9, 3), "peak_flops": floor, "variants": {}}
    for name in VARIANTS:
        result["variants"][name] = run_variant(name, cfg, device, sizes, steps, flops, floor)
        keep(result)
    fp32 = result["variants"]["fp32"]["images_per_s"]
    for row in result["variants"].values():
        row["speedup_vs_fp32"] = round(row["images_per_s"] / fp32, 3) if row["images_per_s"] and fp32 else None
    label = "tiny UNet (--tiny)" if sizes.tiny else "report UNet"
    result["tables"] = {f"{label} {size}x{size}, batch {sizes.speed_batch}, {device}": [
        {"variant": n, "images/s": r["images_per_s"], "x fp32": r["speedup_vs_fp32"], "TFLOP/s": r["achieved_tflops"],
         "fraction of floor": r["fraction_of_peak"], "skipped": r["skip_reason"]}
        for n, r in result["variants"].items()]}
    keep(result)
    return result


def run_variant(name: str, cfg: Any, device: torch.device, sizes: Sizes, steps: int, flops: float,
                floor: dict[str, Any]) -> dict[str, Any]:
    bf16, channels_last, compiled = VARIANTS[name]
    row: dict[str, Any] = {"images_per_s": None, "achieved_tflops": None, "fraction_of_peak": None,
                           "peak_used": "bf16" if bf16 else "fp32", "ran_on": device.type,
                           "target_images_per_s_h100": ISSUE_TARGETS.get(name),
                           "skip_reason": skip_reason(name, device, sizes)}
    if row["skip_reason"]:
        return row
    prec = Precision(device, torch.bfloat16 if bf16 else None, False, channels_last)
    ips = timed_steps(cfg, prec, steps, compile_model=compiled, warmup=3 if device.type == "cuda" else 1)
    peak = floor["bf16"] if bf16 else floor["fp32"]
    row.update(images_per_s=round(ips, 2), achieved_tflops=round(ips * flops / 1e12, 4),
               fraction_of_peak=round(ips * flops / peak, 4) if peak else None)
    if peak is None:
        row["peak_missing_reason"] = floor["source"] if device.type == "cuda" else "no bf16 peak measured on CPU"
    return row
