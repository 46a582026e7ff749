"""The device a plan is for, and what a configuration costs on it.

- On a device that is here (the CPU, or a CUDA device that is present): seconds per training image,
  measured with real training steps at the configuration's batch size: a warm-up step, then the
  fastest of two to five (more while steps are short), since other work on a shared machine can
  slow any single step several times over.
- For a CUDA device that is not here (`--device cuda --memory-gb G` on a CPU machine): the seconds
  are estimated from the model's FLOPs at an assumed throughput, and said to be.
- Memory: `seg.memory`'s estimate of one training step (under AMP on CUDA), no probe needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from search.plan.decisions import PlanError
from seg.config import Config
from seg.memory import GiB, estimate_training_memory, memory_limit, release_device_memory
from seg.model import build_unet, forward_flops
from seg.optim import build_optimizer
from seg.runtime import precision_for, resolve_device
from seg.train import train_step

# Effective training throughput assumed for a CUDA device that is not here to measure (bf16 on a
# data-centre GPU reaches several times this; a plan from it is a starting point, not a measurement).
ASSUMED_CUDA_FLOPS = 50e12
STEP_FORWARDS = 3  # a training step costs about three forward passes (forward, then two for backward)
MIN_STEPS, MAX_STEPS, MIN_TIMED_S = 2, 5, 0.5  # timed probe steps: at least 2, up to 5 until 0.5 s are timed


@dataclass(frozen=True)
class DeviceSpec:
    """What the plan is for: 'cpu' or 'cuda', whether it is here, and (CUDA) its memory."""

    kind: str
    present: bool
    label: str
    memory: int | None = None  # bytes the training step may use (CUDA)
    memory_why: str = ""


def device_spec(device: str, memory_gb: float | None = None) -> DeviceSpec:
    """`--device auto|cpu|cuda` and `--memory-gb`: the device to plan for."""
    if device not in ("auto", "cpu", "cuda"):
        raise PlanError(f"--device {device!r}; expected auto, cpu or cuda")
    if memory_gb is not None and not memory_gb > 0:
        raise PlanError(f"--memory-gb {memory_gb}: expected a positive number of GB")
    present = torch.cuda.is_available()
    kind = ("cuda" if present else "cpu") if device == "auto" else device
    if kind == "cpu":
        return DeviceSpec("cpu", True, f"cpu ({torch.get_num_threads()} threads)")
    if memory_gb is not None:
        label = torch.cuda.get_device_name(0) if present else "a CUDA device that is not here"
        return DeviceSpec("cuda", present, label, int(memory_gb * GiB), f"--memory-gb {memory_gb:g}")
    if not present:
        raise PlanError("--device cuda: no CUDA device is present here; pass --memory-gb G to plan for one "
                        "with G GB of memory")
    free = memory_limit(torch.device("cuda"))
    return DeviceSpec("cuda", True, torch.cuda.get_device_name(0), free, f"{free / GiB:.1f} GiB free now")


class StepCost:
    """Seconds per training image and bytes per training step of configurations on one device."""

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.measured: dict[Any, float] = {}

    @property
    def how(self) -> str:
        if self.spec.present:
            return f"measured on {self.spec.label}"
        return f"estimated from FLOPs at an assumed {ASSUMED_CUDA_FLOPS / 1e12:g} TFLOP/s ({self.spec.label})"

    def seconds_per_image(self, cfg: Config, hw: tuple[int, int]) -> float:
        if not self.spec.present:
            return STEP_FORWARDS * forward_flops(cfg.model, *hw) / ASSUMED_CUDA_FLOPS
        key = (cfg.model, cfg.train.batch_size, hw)
        if key not in self.measured:
            self.measured[key] = _measure(cfg, hw, resolve_device(self.spec.kind))
        return self.measured[key]

    def training_bytes(self, cfg: Config, hw: tuple[int, int]) -> int:
        return estimate_training_memory(cfg, *hw, amp=self.spec.kind == "cuda").total

    def records(self) -> list[dict[str, Any]]:
        """The probes taken, for the plan's fingerprint."""
        return [{"depth": m.depth, "base_channels": m.base_channels, "max_channels": m.max_channels, "batch": b,
                 "input": list(hw), "seconds_per_image": round(s, 6)} for (m, b, hw), s in self.measured.items()]


def _measure(cfg: Config, hw: tuple[int, int], device: torch.device) -> float:
    prec = precision_for(cfg.train, device)
    model = build_unet(cfg.model).to(device, memory_format=prec.memory_format).train()
    opt = build_optimizer(model.parameters(), cfg.train)
    scaler = torch.amp.GradScaler(device.type, enabled=prec.use_scaler)
    batch = cfg.train.batch_size
    x = torch.randn(batch, cfg.model.in_channels, *hw, device=device)  # (B, C, H, W)
    y = torch.randint(0, cfg.model.num_classes, (batch, *hw), device=device)  # (B, H, W)
    x = x.contiguous(memory_format=prec.memory_format)
    times: list[float] = []
    try:
        train_step(model, x, y, opt, scaler, prec)  # the first step allocates and picks kernels: not timed
        while len(times) < MAX_STEPS and (len(times) < MIN_STEPS or sum(times) < MIN_TIMED_S):
            _sync(device)
            start = time.perf_counter()
            train_step(model, x, y, opt, scaler, prec)
            _sync(device)
            times.append(time.perf_counter() - start)
    finally:
        model = opt = x = y = None  # drop the references before freeing
        release_device_memory(device)
    return min(times) / batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_seconds(cost: StepCost, cfg: Config, input_hw: tuple[int, int], samples: int, val_images: int,
                  val_pixels: float) -> float:
    """One epoch: `samples` training images at `input_hw`, then validation (forward only, at its own size)."""
    per_image = cost.seconds_per_image(cfg, input_hw)
    val = per_image / STEP_FORWARDS * val_images * val_pixels / (input_hw[0] * input_hw[1])
    return per_image * samples + val
