"""Peak FLOP/s to compare against: a table of vendor dense peaks for known GPUs, or a matmul measured
in the same run on a CPU (there is no useful vendor figure for a shared 2-core VM)."""

from __future__ import annotations

import time

import torch

# Vendor dense tensor-core peaks, TFLOP/s: (bf16, tf32). Matched by substring of the CUDA device
# name, most specific first. "fp32" variants run with TF32 allowed (seg.runtime turns it on).
GPU_PEAKS_TFLOPS: tuple[tuple[str, float, float], ...] = (
    ("H100 PCIe", 756.0, 378.0),
    ("H100", 989.4, 494.7),  # SXM5
    ("H200", 989.4, 494.7),
    ("A100", 312.0, 156.0),
    ("L40S", 362.0, 183.0),
    ("L4", 121.0, 60.0),
    ("A10", 125.0, 62.5),
)
# The measured H100 bf16 matmul rate, reported beside the vendor peak.
H100_MEASURED_BF16_TFLOPS = 790.0


def gpu_peak(name: str) -> dict[str, float | str | None]:
    """{'bf16', 'tf32', 'source'} in FLOP/s for a CUDA device name; None with a reason when unknown."""
    for key, bf16, tf32 in GPU_PEAKS_TFLOPS:
        if key.lower() in name.lower():
            return {"bf16": bf16 * 1e12, "tf32": tf32 * 1e12, "source": f"vendor dense peak table ({key})"}
    return {"bf16": None, "tf32": None, "source": f"unknown GPU {name!r}: add it to benchmarks.peaks.GPU_PEAKS_TFLOPS"}


def measured_matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 8) -> float:
    """FLOP/s of an n x n matmul on `device` in `dtype`, best of `reps` after one warm-up."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for i in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best
